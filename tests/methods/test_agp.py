"""Gradual (AGP) pruning: the cubic schedule, exact final sparsity per layer, masks held while training."""

from __future__ import annotations

import copy
import dataclasses
import itertools

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.measure import layer_sparsity
from shrinkflow.core.models import MLP
from shrinkflow.core.sparsity import prunable
from shrinkflow.core.training import evaluate
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, kd_loss
from shrinkflow.methods.pruning.agp import AGPConfig, cubic_schedule, plugin


def test_cubic_schedule_matches_zhu_and_gupta():
    assert cubic_schedule(0.0, 0.9, 3) == pytest.approx(
        [0.9 - 0.9 * (2 / 3) ** 3, 0.9 - 0.9 * (1 / 3) ** 3, 0.9]
    )
    steps = cubic_schedule(0.2, 0.8, 10)
    gains = [b - a for a, b in itertools.pairwise(steps)]
    assert all(g2 < g1 for g1, g2 in itertools.pairwise(gains))  # prunes fast first, slowly at the end


def test_registered():
    assert plugins.load(plugins.PRUNERS, "agp") is plugin


def test_global_scope_reaches_the_final_sparsity_and_steps_train(make_ctx):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(64, 32))
    ctx = make_ctx(epochs=1)
    out = plugin.apply(model, AGPConfig(sparsity=0.8, steps=3, epochs_per_step=1), ctx)
    total = sum(m.weight.numel() for _, m in prunable(out))
    zeros = sum(int((m.weight == 0).sum()) for _, m in prunable(out))
    assert abs(zeros - 0.8 * total) <= 1
    labels = [h.epoch for h in ctx.history]
    assert len(labels) == 3  # two in-between steps of 1 epoch + the final fine-tuning epoch
    assert not any(hasattr(m, "weight_orig") for _, m in prunable(out))


def test_per_layer_targets_and_accuracy_recovers(trained_mlp, make_ctx, digits_splits):
    _, _, test = digits_splits
    before = evaluate(trained_mlp, test)[0]
    cfg = AGPConfig(sparsity=0.9, steps=4, epochs_per_step=1, scope="layer", layer_sparsity={"3": 0.5})
    out = plugin.apply(trained_mlp, cfg, make_ctx(epochs=3, lr=1e-3))
    sparsity = layer_sparsity(out)
    assert sparsity["1.weight"] == pytest.approx(0.9, abs=1e-3)
    assert sparsity["3.weight"] == pytest.approx(0.5, abs=1e-2)
    assert evaluate(out, test)[0] >= before - 0.03  # 90% of the hidden layer gone, accuracy kept


def _recording(ctx):
    """The context, with ``fit`` recording the loss function each fine-tuning gets."""
    losses: list = []

    def fit(model, loss_fn=None, **kwargs):
        losses.append(loss_fn)
        return ctx.fit(model, loss_fn=loss_fn, **kwargs)

    return dataclasses.replace(ctx, fit=fit), losses


def test_kd_alpha_fine_tunes_on_the_dense_models_soft_targets(trained_mlp, make_ctx, digits_splits):
    train = digits_splits[0]
    dense = copy.deepcopy(trained_mlp)
    ctx, losses = _recording(make_ctx(epochs=2, lr=1e-3))
    cfg = AGPConfig(sparsity=0.9, steps=2, epochs_per_step=1, kd_alpha=0.7, temperature=4.0)
    out = plugin.apply(trained_mlp, cfg, ctx)
    assert len(losses) == 2 and None not in losses  # the step and the final fine-tuning
    # the loss is KD against the model as it was before pruning, not against the pruned one
    x, y = train.x[:64], train.y[:64]
    with torch.no_grad():
        logits = out(x)
        expected = kd_loss(logits, dense(x), y, SoftKDConfig(temperature=4.0, alpha=0.7))
        assert float(losses[0](logits, x, y)) == pytest.approx(float(expected), rel=1e-6)
    weights = [m.weight for _, m in prunable(out)]
    assert sum(int((w == 0).sum()) for w in weights) == pytest.approx(
        0.9 * sum(w.numel() for w in weights), abs=1
    )

    ctx, losses = _recording(make_ctx(epochs=1))
    plugin.apply(dense, AGPConfig(sparsity=0.5, steps=2, epochs_per_step=1), ctx)
    assert losses == [None, None]  # kd_alpha=0: plain cross-entropy


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.0}, r"sparsity=1.0 is invalid: expected a number with 0.0 <= sparsity < 1.0"),
        ({"sparsity": 0.5, "initial_sparsity": 0.7}, r"initial_sparsity=0.7 .*<= 0.5"),
        ({"steps": 0}, r"steps=0 .*1 <= steps"),
        ({"layer_sparsity": {"1": 1.5}}, r"layer_sparsity.1=1.5"),
        ({"scope": "row"}, r"scope='row'.*'global', 'layer'"),
        ({"kd_alpha": 1.5}, r"kd_alpha=1.5 is invalid: expected a number with 0.0 <= kd_alpha <= 1.0"),
        ({"temperature": 0}, r"temperature=0 is invalid"),
    ],
)
def test_config_errors_name_the_key_and_range(options, message):
    with pytest.raises(ConfigError, match=message):
        AGPConfig.from_dict(options)


def test_unknown_layer_names_are_listed(make_ctx):
    with pytest.raises(ConfigError, match=r"names of prunable layers \['1', '3'\]"):
        plugin.apply(MLP((1, 8, 8), 10, hidden=(16,)), AGPConfig(layer_sparsity={"fc9": 0.5}), make_ctx())
