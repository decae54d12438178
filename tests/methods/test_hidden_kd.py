"""TinyBERT/MiniLMv2 distillation: the layer map, the relation loss, training a shallower student."""

from __future__ import annotations

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP
from shrinkflow.core.textmodels import TransformerEncoder
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything
from shrinkflow.methods.distillation.hidden_kd import (
    HiddenKDConfig,
    _relation_kl,
    check,
    hidden_kd,
    layer_map,
    plugin,
)


def _encoder(layers: int, d_model: int = 32, heads: int = 4) -> TransformerEncoder:
    return TransformerEncoder((16,), 2, vocab_size=200, d_model=d_model, heads=heads, layers=layers, ffn=64)


def test_layer_map_is_tinyberts_uniform_strategy():
    assert layer_map(2, 4) == [1, 3]
    assert layer_map(3, 12) == [3, 7, 11]
    assert layer_map(4, 4) == [0, 1, 2, 3]


def test_relation_kl_is_zero_for_equal_relations_and_ignores_padding():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 16, generator=g)
    real = torch.ones(2, 5, dtype=torch.bool)
    real[1, 3:] = False
    assert float(_relation_kl(a, a, 2, real)) == pytest.approx(0.0, abs=1e-6)
    different = float(_relation_kl(a, b, 2, real))  # widths 8 and 16: relation heads need not match
    assert different > 0.01
    changed = b.clone()
    changed[1, 3:] = 100.0  # only padded positions change
    assert float(_relation_kl(a, changed, 2, real)) == pytest.approx(different, rel=1e-5)


def test_a_narrower_shallower_student_learns_from_the_teacher_layers(text_splits, make_text_ctx):
    train, _, test = text_splits
    seed_everything(0)
    teacher = _encoder(2)
    fit(teacher, train, TrainConfig(epochs=4, lr=3e-3, batch_size=32, optimizer="adamw"))
    teacher.eval()
    seed_everything(1)
    student = _encoder(1, d_model=16, heads=2)
    untouched = {k: v.clone() for k, v in student.state_dict().items()}
    out = hidden_kd(student, HiddenKDConfig(relation_heads=4), make_text_ctx(epochs=6, teacher=teacher))
    assert out is student and set(out.state_dict()) == set(untouched)  # no projection left behind
    assert evaluate(teacher, test)[0] > 0.95 and evaluate(out.eval(), test)[0] > 0.9


def test_non_transformer_models_and_bad_options_fail_clearly(make_text_ctx):
    assert plugins.load(plugins.DISTILLERS, "hidden_kd") is plugin
    with pytest.raises(ConfigError, match="feature_kd"):
        check(MLP((1, 8, 8), 10), HiddenKDConfig(), (1, 8, 8))
    with pytest.raises(ConfigError, match="relation_heads"):
        hidden_kd(
            _encoder(1, d_model=12, heads=3),
            HiddenKDConfig(relation_heads=8),
            make_text_ctx(teacher=_encoder(2)),
        )
    with pytest.raises(ConfigError, match="alpha"):
        HiddenKDConfig(alpha=1.5)
