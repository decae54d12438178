"""Magnitude pruning: exact sparsity (global and per layer), exclusions, fine-tuning with masks, config errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.measure import layer_sparsity
from shrinkflow.core.models import MLP, LeNet5
from shrinkflow.core.sparsity import prunable
from shrinkflow.core.training import evaluate
from shrinkflow.methods.pruning.magnitude import MagnitudeConfig, magnitude_prune, plugin
from shrinkflow.stages import PruneStage

SIZES = {"1": 64 * 64, "3": 64 * 32, "5": 32 * 10}  # MLP(64, 32) on 8x8 digits


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(64, 32))


def _zeros(model: nn.Module) -> dict[str, int]:
    return {name: int((m.weight == 0).sum()) for name, m in prunable(model)}


def _clean(model: nn.Module) -> bool:
    return not any(hasattr(m, "weight_orig") or m._forward_pre_hooks for _, m in prunable(model))


def test_plugin_is_registered():
    assert plugins.load(plugins.PRUNERS, "magnitude") is plugin
    assert plugin.config_cls is MagnitudeConfig and plugin.apply is magnitude_prune


@pytest.mark.parametrize("sparsity", [0.3, 0.7, 0.95])
def test_global_scope_reaches_the_requested_sparsity_over_prunable_weights(make_ctx, sparsity):
    model = _mlp()
    out = plugin.apply(model, MagnitudeConfig(sparsity=sparsity), make_ctx(epochs=1))
    total = sum(SIZES.values())
    zeros = sum(_zeros(out).values())
    assert abs(zeros - sparsity * total) <= 1
    assert all(int((m.bias == 0).sum()) == 0 for _, m in prunable(out))  # biases are not pruned
    assert _clean(out)


def test_global_scope_uses_one_threshold_across_layers(make_ctx):
    model = _mlp()
    original = {name: m.weight.detach().clone() for name, m in prunable(model)}
    out = plugin.apply(model, MagnitudeConfig(sparsity=0.6), make_ctx(epochs=0))
    pruned = torch.cat([original[n][m.weight == 0].abs() for n, m in prunable(out)])
    kept = torch.cat([original[n][m.weight != 0].abs() for n, m in prunable(out)])
    assert float(pruned.max()) <= float(kept.min())  # the smallest |w| went, whatever layer they were in
    per_layer = layer_sparsity(out)
    # wide layers start with smaller weights (init bound 1/sqrt(fan_in)), so they lose more
    assert per_layer["1.weight"] > 0.6 > per_layer["5.weight"]


@pytest.mark.parametrize("sparsity", [0.5, 0.9])
def test_layer_scope_prunes_each_layer_to_the_sparsity(make_ctx, sparsity):
    out = plugin.apply(_mlp(), MagnitudeConfig(sparsity=sparsity, scope="layer"), make_ctx(epochs=1))
    zeros = _zeros(out)
    for name, size in SIZES.items():
        assert abs(zeros[name] - sparsity * size) <= 1, name
    assert _clean(out)


def test_layer_scope_removes_the_smallest_weights_of_each_layer(make_ctx):
    model = _mlp()
    original = {name: m.weight.detach().clone() for name, m in prunable(model)}
    out = plugin.apply(model, MagnitudeConfig(sparsity=0.5, scope="layer"), make_ctx(epochs=0))
    for name, m in prunable(out):
        assert float(original[name][m.weight == 0].abs().max()) <= float(
            original[name][m.weight != 0].abs().min()
        )


def test_exclude_keeps_a_layer_dense(make_ctx):
    out = plugin.apply(_mlp(), MagnitudeConfig(sparsity=0.8, exclude=["5"]), make_ctx(epochs=1))
    zeros = _zeros(out)
    assert zeros["5"] == 0
    assert abs(zeros["1"] + zeros["3"] - 0.8 * (SIZES["1"] + SIZES["3"])) <= 1


def test_exclude_works_on_conv_names(make_ctx):
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10)
    out = plugin.apply(
        model,
        MagnitudeConfig(sparsity=0.5, scope="layer", exclude=["features.0", "classifier.4"]),
        make_ctx(),
    )
    sparsity = layer_sparsity(out)
    assert sparsity["features.0.weight"] == 0.0 and sparsity["classifier.4.weight"] == 0.0
    assert sparsity["features.3.weight"] == pytest.approx(0.5, abs=1 / 2400)


def test_unknown_exclude_name_lists_the_prunable_layers(make_ctx):
    with pytest.raises(ConfigError) as info:
        plugin.apply(_mlp(), MagnitudeConfig(exclude=["5", "classifier"]), make_ctx())
    assert info.value.key == "exclude" and info.value.value == ["classifier"]
    assert info.value.expected == "names of prunable layers ['1', '3', '5']"


def test_excluding_every_layer_is_refused(make_ctx):
    with pytest.raises(ConfigError, match="to leave at least one prunable layer"):
        plugin.apply(_mlp(), MagnitudeConfig(exclude=["1", "3", "5"]), make_ctx())


def test_zero_sparsity_prunes_nothing(make_ctx):
    out = plugin.apply(_mlp(), MagnitudeConfig(sparsity=0.0), make_ctx())
    assert sum(_zeros(out).values()) == 0 and _clean(out)


def test_fine_tuning_keeps_the_zeros_and_recovers_accuracy(trained_mlp, make_ctx, digits_splits):
    test = digits_splits[2]
    dense_accuracy = evaluate(trained_mlp, test)[0]
    cfg = MagnitudeConfig(sparsity=0.95)
    no_finetune = plugin.apply(copy.deepcopy(trained_mlp), cfg, make_ctx(epochs=0))
    ctx = make_ctx(epochs=3, lr=1e-2)
    finetuned = plugin.apply(copy.deepcopy(trained_mlp), cfg, ctx)
    assert [h.epoch for h in ctx.history] == [1, 2, 3]  # fine-tuning went through ctx.fit
    total = 64 * 64 + 64 * 10
    assert abs(sum(_zeros(finetuned).values()) - 0.95 * total) <= 1  # masks held during fine-tuning
    before, after = evaluate(no_finetune, test)[0], evaluate(finetuned, test)[0]
    assert dense_accuracy > 0.9
    assert before < 0.6  # 95 % of the weights gone: accuracy collapses ...
    assert after > before + 0.15 and after > 0.65  # ... and fine-tuning with the masks brings it back


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sparsity": 1.0}, "sparsity=1.0 is invalid: expected a number with 0.0 <= sparsity < 1.0"),
        ({"sparsity": -0.1}, "sparsity=-0.1 is invalid: expected a number with 0.0 <= sparsity < 1.0"),
        ({"sparsity": "half"}, "sparsity='half' is invalid"),
        ({"scope": "x"}, "scope='x' is invalid: expected one of ['global', 'layer']"),
        ({"exclude": "5"}, "exclude='5' is invalid: expected a list of module names"),
        ({"exclude": [5]}, "exclude=[5] is invalid: expected a list of module names"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        MagnitudeConfig(**options)
    assert str(info.value).startswith(message)


def test_config_errors_in_a_stage_carry_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^prune\.options\.magnitude\.scope='x' is invalid"):
        PruneStage(method="magnitude", options={"magnitude": {"scope": "x"}})
    with pytest.raises(
        ConfigError, match=r"^prune\.options\.magnitude\.amount=0\.5 is invalid: expected one of the keys"
    ):
        PruneStage(method="magnitude", options={"magnitude": {"amount": 0.5}})


def test_config_defaults_and_round_trip():
    cfg = plugin.config({})
    assert cfg == MagnitudeConfig(sparsity=0.5, scope="global", exclude=[])
    assert MagnitudeConfig.from_dict(cfg.to_dict()) == cfg
