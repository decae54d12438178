"""Binarization (BWN): two values per output channel, the XNOR-Net scale, zeros kept, STE recovery."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP, LeNet5
from shrinkflow.core.sparsity import frozen_zeros, prunable
from shrinkflow.core.training import evaluate
from shrinkflow.methods.pruning.magnitude import MagnitudeConfig
from shrinkflow.methods.pruning.magnitude import plugin as magnitude
from shrinkflow.methods.quantization.binarize import BinarizeConfig, binarize, binarized_layers, plugin
from shrinkflow.stages import QuantizeStage


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(64, 32))


def _is_binary(weight: torch.Tensor, alpha: torch.Tensor | None = None, both_signs: bool = False) -> bool:
    """Every output channel's non-zeros are +-a_c (a_c checked if given); ``both_signs``: exactly the
    two values {-a_c, +a_c} (a sparse row may keep only one sign)."""
    for c, row in enumerate(weight.detach().flatten(1)):
        values = set(row[row != 0].tolist())
        if not values:  # a fully pruned channel
            continue
        a = max(abs(v) for v in values)
        if not values <= {a, -a} or (both_signs and values != {a, -a}):
            return False
        if alpha is not None and a != pytest.approx(float(alpha[c]), rel=1e-6):
            return False
    return True


def test_plugin_is_registered():
    assert plugins.load(plugins.QUANTIZERS, "binarize") is plugin
    assert plugin.config_cls is BinarizeConfig and plugin.apply is binarize


def test_every_row_takes_two_values_scaled_by_its_mean_magnitude(make_ctx):
    model = _mlp()
    original = {name: m.weight.detach().clone() for name, m in prunable(model)}
    out = plugin.apply(model, BinarizeConfig(finetune=False, skip_first_last=False), make_ctx())
    for name, m in prunable(out):
        w = original[name]
        assert _is_binary(m.weight, alpha=w.abs().mean(1), both_signs=True)  # alpha_c = mean |W_c|
        assert torch.equal(torch.sign(m.weight), torch.sign(w))  # the sign is kept
        assert m.weight.dtype == torch.float32 and type(m) is nn.Linear  # a plain float model
    assert binarized_layers(out) == {"binarized": ["1", "3", "5"], "full_precision": []}


def test_first_and_last_layers_stay_float_by_default_and_exclude_adds_more(make_ctx):
    model = _mlp()
    original = copy.deepcopy(model)
    out = plugin.apply(model, BinarizeConfig(finetune=False), make_ctx())
    assert binarized_layers(out) == {"binarized": ["3"], "full_precision": ["1", "5"]}
    assert torch.equal(out[1].weight, original[1].weight) and torch.equal(out[5].weight, original[5].weight)
    out = plugin.apply(
        _mlp(), BinarizeConfig(finetune=False, skip_first_last=False, exclude=["1"]), make_ctx()
    )
    assert binarized_layers(out)["binarized"] == ["3", "5"]


def test_convolutions_are_scaled_per_output_channel(make_ctx):
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10)
    w = model.features[3].weight.detach().clone()
    out = plugin.apply(model, BinarizeConfig(finetune=False), make_ctx())
    assert _is_binary(out.features[3].weight, alpha=w.abs().mean((1, 2, 3)), both_signs=True)
    assert binarized_layers(out)["full_precision"] == ["features.0", "classifier.4"]
    assert out(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_a_pruned_layer_keeps_its_zeros_and_scales_by_its_kept_weights(trained_mlp, make_ctx):
    sparse = magnitude.apply(trained_mlp, MagnitudeConfig(sparsity=0.7), make_ctx())
    original = {name: m.weight.detach().clone() for name, m in prunable(sparse)}
    out = plugin.apply(sparse, BinarizeConfig(finetune=False, skip_first_last=False), make_ctx())
    for name, m in prunable(out):
        w = original[name]
        assert torch.equal(m.weight == 0, w == 0), name
        assert _is_binary(m.weight, alpha=w.abs().sum(1) / (w != 0).sum(1).clamp_min(1)), name


def test_finetuning_keeps_the_zeros_of_every_layer(trained_mlp, make_ctx):
    sparse = magnitude.apply(trained_mlp, MagnitudeConfig(sparsity=0.7), make_ctx())
    zeros = {name: m.weight == 0 for name, m in prunable(sparse)}
    cfg = BinarizeConfig(skip_first_last=False, exclude=["1"])
    out = plugin.apply(sparse, cfg, make_ctx(epochs=2))
    for name, m in prunable(out):
        assert torch.equal(m.weight == 0, zeros[name]), name  # the float layer "1" trained with its mask
    assert binarized_layers(out) == {"binarized": ["3"], "full_precision": ["1"]}
    assert not any(hasattr(m, "weight_orig") or hasattr(m, "parametrizations") for _, m in prunable(out))


def test_works_inside_a_stage_that_freezes_zeros(trained_mlp, make_ctx):
    sparse = magnitude.apply(trained_mlp, MagnitudeConfig(sparsity=0.5), make_ctx())
    zeros = {name: m.weight == 0 for name, m in prunable(sparse)}
    with frozen_zeros(sparse):
        out = plugin.apply(sparse, BinarizeConfig(skip_first_last=False), make_ctx(epochs=1))
    for name, m in prunable(out):
        assert torch.equal(m.weight == 0, zeros[name]) and _is_binary(m.weight), name


def test_ste_finetuning_recovers_the_accuracy(trained_mlp, make_ctx, digits_splits):
    test = digits_splits[2]
    dense = evaluate(trained_mlp, test)[0]
    cfg = BinarizeConfig(skip_first_last=False)
    plain = evaluate(
        plugin.apply(
            copy.deepcopy(trained_mlp), BinarizeConfig(finetune=False, skip_first_last=False), make_ctx()
        ),
        test,
    )[0]
    torch.manual_seed(0)
    ctx = make_ctx(epochs=5, lr=1e-2)
    tuned = plugin.apply(copy.deepcopy(trained_mlp), cfg, ctx)
    after = evaluate(tuned, test)[0]
    assert [h.epoch for h in ctx.history] == [1, 2, 3, 4, 5]
    assert all(_is_binary(m.weight, both_signs=True) for _, m in prunable(tuned))
    assert not any(hasattr(m, "parametrizations") for _, m in prunable(tuned))  # latent weights gone
    # measured: dense 0.936, binarized without training 0.858, after 5 STE epochs 0.936
    assert plain < dense - 0.03
    assert after > 0.91 and after > plain + 0.03


def test_nothing_to_binarize_warns_and_leaves_the_model(trained_mlp, make_ctx, caplog):
    original = copy.deepcopy(trained_mlp)
    with caplog.at_level(logging.WARNING):
        out = plugin.apply(trained_mlp, BinarizeConfig(), make_ctx(epochs=1))  # 2 layers: first and last
    assert "no layer left to binarize" in caplog.text
    assert all(
        torch.equal(a, b)
        for a, b in zip(out.state_dict().values(), original.state_dict().values(), strict=True)
    )


def test_unknown_exclude_name_fails(make_ctx):
    with pytest.raises(ConfigError, match=r"^exclude=\['fc'\] is invalid: expected names of prunable layers"):
        plugin.apply(_mlp(), BinarizeConfig(exclude=["fc"]), make_ctx())


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"finetune": "yes"}, "finetune='yes' is invalid: expected true or false"),
        ({"skip_first_last": 1}, "skip_first_last=1 is invalid: expected true or false"),
        ({"exclude": "1"}, "exclude='1' is invalid: expected a list of module names"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        BinarizeConfig(**options)
    assert str(info.value) == message


def test_stage_errors_carry_the_dotted_key_and_defaults_round_trip():
    with pytest.raises(ConfigError, match=r"^quantize\.options\.binarize\.finetune='no' is invalid"):
        QuantizeStage(method="binarize", options={"binarize": {"finetune": "no"}})
    cfg = plugin.config({})
    assert cfg == BinarizeConfig(finetune=True, skip_first_last=True, exclude=[])
    assert BinarizeConfig.from_dict(cfg.to_dict()) == cfg
