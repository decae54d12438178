"""Head and FFN pruning: physical removal equals masking, ratios, importance, reload, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP, ModelSpec
from shrinkflow.core.textmodels import TransformerEncoder, encoder_blocks, huggingface
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything
from shrinkflow.methods.pruning.heads import HeadsConfig, check, cut_block, head_scores, heads_prune, plugin

VOCAB = 200


def _ids(n: int = 6, length: int = 12) -> torch.Tensor:
    x = torch.randint(5, VOCAB, (n, length), generator=torch.Generator().manual_seed(0))
    x[:, 0] = 2
    x[1, 7:] = 0  # padding
    return x


def _encoder(length: int = 16, **kwargs) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(
        (length,), 2, vocab_size=VOCAB, d_model=32, heads=4, layers=2, ffn=64, **kwargs
    ).eval()


def _bert():
    torch.manual_seed(0)
    config = {
        "vocab_size": VOCAB,
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    return huggingface((16,), 2, "BertForSequenceClassification", config).eval()


@pytest.mark.parametrize("make", [_encoder, _bert], ids=["transformer_encoder", "bert"])
def test_removing_heads_and_neurons_equals_masking_their_outputs(make):
    model = make()
    masked, cut = copy.deepcopy(model), copy.deepcopy(model)
    heads, neurons = torch.tensor([1, 3]), torch.arange(0, 64, 2)
    for block in encoder_blocks(masked):
        with torch.no_grad():
            dims = block.head_dim
            for h in (0, 2):
                block.out.weight[:, h * dims : (h + 1) * dims] = 0
            block.ffn_out.weight[:, 1::2] = 0
    before = sum(p.numel() for p in model.parameters())
    for block in encoder_blocks(cut):
        cut_block(block, heads, neurons)
    x = _ids()
    with torch.no_grad():
        same, changed = (cut(x) - masked(x)).abs().max(), (cut(x) - model(x)).abs().max()
    assert same < 1e-6 and changed > 100 * same
    assert [b.heads for b in encoder_blocks(cut)] == [2, 2]
    # per layer: q/k/v/out lose 3 x (32 x 16 + 16) + 32 x 16; the FFN 2 x 32 x 32 + 32
    assert before - sum(p.numel() for p in cut.parameters()) == 2 * (4 * 32 * 16 + 3 * 16 + 2 * 32 * 32 + 32)


def test_a_head_that_contributes_nothing_scores_zero_and_goes_first(text_splits, make_text_ctx):
    model = _encoder()
    block = encoder_blocks(model)[1]
    with torch.no_grad():
        block.out.weight[:, 16:24] = 0  # head 2 of layer 1: its gate gradient is 0
    cfg = HeadsConfig(head_ratio=1 / 8, ffn_ratio=0.0, batches=2, batch_size=16)
    ctx = make_text_ctx()
    scores = head_scores(model, cfg, ctx)
    assert scores[1][0][2] == 0 and (scores[1][0][[0, 1, 3]] > 0).all() and (scores[0][0] > 0).all()
    heads_prune(model, cfg, ctx)
    assert [b.heads for b in encoder_blocks(model)] == [4, 3]
    kept = block.attn.query.weight.shape[0]
    assert kept == 24


@pytest.mark.parametrize("importance", ["taylor", "l1"])
def test_pruning_half_the_heads_and_neurons_of_a_trained_encoder_keeps_its_accuracy(
    text_splits, make_text_ctx, importance, tmp_path
):
    train, _, test = text_splits
    seed_everything(0)
    model = _encoder().train()
    fit(model, train, TrainConfig(epochs=4, lr=3e-3, batch_size=32, optimizer="adamw"))
    dense = evaluate(model.eval(), test)[0]
    blocks = encoder_blocks(model)
    encoder_params = lambda: sum(p.numel() for b in blocks for p in b.layer.parameters())  # noqa: E731
    before = encoder_params()
    cfg = HeadsConfig(head_ratio=0.5, ffn_ratio=0.5, importance=importance, batches=2, batch_size=32)
    pruned = heads_prune(model, cfg, make_text_ctx(epochs=1))
    assert sum(b.heads for b in blocks) == 4 and all(b.heads >= 1 for b in blocks)
    assert sum(b.ffn_in.out_features for b in blocks) == 64
    assert encoder_params() / before < 0.52
    accuracy = evaluate(pruned.eval(), test)[0]
    assert dense > 0.9 and accuracy >= dense - 0.05
    # the recipe rebuilds the pruned widths in a fresh model: identical predictions after reload
    base = ModelArtifact.build(
        ModelSpec(
            "transformer_encoder", {"vocab_size": VOCAB, "d_model": 32, "heads": 4, "layers": 2, "ffn": 64}
        ),
        (16,),
        2,
    )
    saved = base.with_step(pruned, plugins.PRUNERS, "heads", cfg.to_dict(), plugin.structure(pruned))
    artifact.save(saved, tmp_path / "pruned")
    reloaded = artifact.load(tmp_path / "pruned").model.eval()
    x = test.for_eval().head(32)
    with torch.no_grad():
        assert torch.equal(reloaded(x), pruned(x))


def test_layer_scope_keeps_the_same_share_in_every_layer(make_text_ctx):
    model = _encoder()
    heads_prune(
        model, HeadsConfig(head_ratio=0.5, ffn_ratio=0.25, importance="l1", scope="layer"), make_text_ctx()
    )
    assert [(b.heads, b.ffn_in.out_features) for b in encoder_blocks(model)] == [(2, 48), (2, 48)]


def test_models_without_attention_and_bad_options_fail_clearly():
    assert plugins.load(plugins.PRUNERS, "heads") is plugin
    with pytest.raises(ConfigError, match=r"transformer encoder.*channel"):
        check(MLP((1, 8, 8), 10), HeadsConfig(), (1, 8, 8))
    check(_encoder(), HeadsConfig(), (16,))
    with pytest.raises(ConfigError, match="head_ratio"):
        HeadsConfig(head_ratio=1.0)
    with pytest.raises(ConfigError, match="importance"):
        HeadsConfig(importance="entropy")


def test_a_bert_model_is_pruned_by_head_mask_gradients_too(make_text_ctx, text_splits):
    model = _bert()
    cfg = HeadsConfig(head_ratio=0.5, ffn_ratio=0.5, batches=2, batch_size=16)
    scores = head_scores(model, cfg, make_text_ctx())
    assert all(bool((h > 0).all()) and len(f) == 64 for h, f in scores)
    heads_prune(model, cfg, make_text_ctx())
    blocks = encoder_blocks(model)
    assert sum(b.heads for b in blocks) == 4 and sum(b.ffn_in.out_features for b in blocks) == 64
    assert blocks[0].attn.all_head_size == blocks[0].heads * 8
    with torch.no_grad():
        assert model(text_splits[2].for_eval().head(4)).shape == (4, 2)
