"""Transformer text classifiers: the built-in encoder and Hugging Face classes from a config."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import ModelSpec, build_model, check_forward
from shrinkflow.core.textmodels import Attention, TransformerEncoder


def ids(n: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(4, vocab, (n, length), generator=g)
    x[:, 0] = 2
    lengths = torch.randint(2, length + 1, (n,), generator=g)
    x[torch.arange(length).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    return x


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_changes_no_prediction(pooling):
    torch.manual_seed(0)
    model = TransformerEncoder(
        (16,), 3, vocab_size=50, d_model=32, heads=4, layers=2, ffn=64, pooling=pooling
    ).eval()
    x = ids(8, 10, 50)
    padded = torch.cat([x, torch.zeros(8, 6, dtype=torch.int64)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(x), model(padded), atol=1e-5)
        # each sequence alone, unpadded, gives the batch's row
        for i in range(8):
            real = x[i : i + 1, : int((x[i] != 0).sum())]
            assert torch.allclose(model(real), model(x)[i : i + 1], atol=1e-5)


def test_every_projection_is_its_own_linear_and_the_encoder_is_registered():
    model = build_model(
        ModelSpec("transformer_encoder", {"vocab_size": 100, "d_model": 32, "heads": 2, "layers": 3}),
        (20,),
        2,
    )
    attention = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attention) == 3 and all(a.heads == 2 and a.head_dim == 16 for a in attention)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 6 + 1  # q, k, v, output, ffn_in, ffn_out per layer; the classifier
    check_forward(model, ModelSpec("transformer_encoder", {"vocab_size": 100}), (20,), 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vocab_size": 100, "d_model": 30, "heads": 4}, "heads"),
        ({"vocab_size": 100, "pooling": "max"}, "pooling"),
    ],
)
def test_bad_encoder_options_fail_naming_them(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(ModelSpec("transformer_encoder", kwargs), (20,), 2)


def test_a_transformers_class_by_import_path_is_built_from_its_config_and_returns_logits():
    pytest.importorskip("transformers")
    config = {
        "vocab_size": 120,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    spec = ModelSpec("transformers:BertForSequenceClassification", {"config": config})
    model = build_model(spec, (24,), 2).eval()
    x = ids(4, 12, 120)
    with torch.no_grad():
        out = model(x)
        padded = model(torch.cat([x, torch.zeros(4, 5, dtype=torch.int64)], dim=1))
    assert out.shape == (4, 2) and torch.allclose(out, padded, atol=1e-5)
    with pytest.raises(ConfigError, match="vocab_size"):
        build_model(
            ModelSpec("transformers:BertForSequenceClassification", {"config": {"hidden_size": 32}}), (24,), 2
        )
    with pytest.raises(ConfigError, match="BertConfig"):
        build_model(
            ModelSpec(
                "transformers:BertForSequenceClassification",
                {
                    "config": {
                        "vocab_size": 10,
                        "no_such_field": 1,
                        "hidden_size": 30,
                        "num_attention_heads": 4,
                    }
                },
            ),
            (24,),
            2,
        )


def test_macs_count_the_attention_products_and_token_noise_replaces_tokens_with_unk():
    from shrinkflow.core.data import Split
    from shrinkflow.core.measure import count_macs, noisy_accuracy

    model = TransformerEncoder((16,), 2, vocab_size=50, d_model=32, heads=4, layers=2, ffn=64).eval()
    x = ids(1, 10, 50)
    x[0] = torch.randint(4, 50, (10,))
    dense, nonzero = count_macs(model, x)
    linears = 2 * (4 * 32 * 32 + 2 * 32 * 64) * 10 + 32 * 2  # per token per layer, and the head
    assert dense == linears + 2 * (2 * 10 * 10 * 32)  # 2 layers x (scores + values)
    assert nonzero == dense  # nothing pruned

    class Unknown(torch.nn.Module):  # class 1 when a token (column ``where``) is [UNK]
        def __init__(self, where: slice) -> None:
            super().__init__()
            self.where = where

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hit = (x[:, self.where] == 1).any(1).float()
            return torch.stack([torch.full_like(hit, 0.5), hit], 1)

    tokens = ids(400, 12, 50)
    data = Split.of(tokens, torch.ones(400, dtype=torch.int64), 2)
    anywhere, first = Unknown(slice(None)), Unknown(slice(0, 1))
    assert noisy_accuracy(anywhere, data, 0.0) == 0.0 and noisy_accuracy(anywhere, data, 1.0) == 1.0
    assert noisy_accuracy(first, data, 1.0) == 0.0  # [CLS] stays
    # each real token after [CLS] with probability 0.3: P(at least one) per sequence, on average
    real = (tokens != 0).sum(1) - 1
    expected = float((1 - 0.7 ** real.double()).mean())
    assert abs(noisy_accuracy(anywhere, data, 0.3) - expected) < 0.05
