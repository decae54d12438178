"""Channel pruning: real parameter/MAC reduction, coupled layers, exclusions, reload, config errors."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch_pruning as tp
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import split_data
from shrinkflow.core.method import Context
from shrinkflow.core.models import MLP, ModelSpec
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything
from shrinkflow.methods.pruning.channel import (
    ChannelConfig,
    channel_prune,
    classifier_name,
    plugin,
    restore,
    structure,
)
from shrinkflow.stages import PruneStage

SHAPE = (1, 8, 8)


def _costs(model: nn.Module, shape=SHAPE) -> tuple[float, float]:
    macs, params = tp.utils.count_ops_and_params(model, torch.zeros(1, *shape))
    return float(macs), float(params)


def _save_and_load(base: ModelArtifact, model: nn.Module, cfg: ChannelConfig, path) -> nn.Module:
    result = base.with_step(model, plugins.PRUNERS, "channel", cfg.to_dict(), structure(model))
    artifact.save(result, path)
    return artifact.load(path).model


def test_plugin_is_registered():
    assert plugins.load(plugins.PRUNERS, "channel") is plugin
    assert plugin.config_cls is ChannelConfig and plugin.apply is channel_prune
    assert plugin.restore is restore and plugin.structure is structure


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5"])
def test_half_the_channels_cut_params_and_macs_by_45_percent_and_reload_identically(
    name, make_ctx, digits_splits, tmp_path
):
    seed_everything(0)
    base = ModelArtifact.build(ModelSpec(name), SHAPE, 10)
    head = classifier_name(base.model, 10)
    macs0, params0 = _costs(base.model)
    cfg = ChannelConfig(ratio=0.5)
    pruned = plugin.apply(copy.deepcopy(base.model), cfg, make_ctx(epochs=1)).eval()
    macs1, params1 = _costs(pruned)
    assert params1 <= 0.55 * params0 and macs1 <= 0.55 * macs0
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    originals = [m for m in base.model.modules() if isinstance(m, nn.Conv2d)]
    # every convolution keeps half its filters (rounded up); the next layer's inputs follow
    assert [c.out_channels for c in convs] == [-(-o.out_channels // 2) for o in originals]
    assert convs[1].in_channels == convs[0].out_channels
    assert pruned.get_submodule(head).out_features == 10  # the classifier's outputs are kept
    x = digits_splits[2].x
    with torch.inference_mode():
        out = pruned(x)
    assert out.shape == (len(x), 10) and bool(torch.isfinite(out).all())
    reloaded = _save_and_load(base, pruned, cfg, tmp_path / "m.pt")
    with torch.inference_mode():
        assert torch.equal(reloaded(x), out)


def test_mlp_loses_exactly_half_its_hidden_units(make_ctx):
    torch.manual_seed(0)
    model = plugin.apply(MLP(SHAPE, 10, hidden=(64, 32)), ChannelConfig(ratio=0.5), make_ctx())
    assert structure(model) == {"widths": {"1": [32, 64], "3": [16, 32], "5": [10, 16]}}
    params = sum(p.numel() for p in model.parameters())
    assert params == (64 * 32 + 32) + (32 * 16 + 16) + (16 * 10 + 10)


def test_l1_removes_the_units_with_the_smallest_weight_norm(make_ctx):
    torch.manual_seed(0)
    model = MLP(SHAPE, 10, hidden=(16,))
    with torch.no_grad():
        model[1].weight.mul_(torch.arange(1, 17, dtype=torch.float32)[:, None])  # unit i scaled by i+1
    kept = model[1].weight.detach()[8:].clone()
    plugin.apply(model, ChannelConfig(ratio=0.5), make_ctx())
    assert torch.equal(model[1].weight.detach(), kept)  # the 8 largest-norm units survive, in order


def test_ignored_layer_keeps_its_outputs(make_ctx):
    torch.manual_seed(0)
    model = plugin.apply(MLP(SHAPE, 10, hidden=(64, 32)), ChannelConfig(ratio=0.5, ignore=["1"]), make_ctx())
    assert structure(model)["widths"] == {"1": [64, 64], "3": [16, 64], "5": [10, 16]}


def test_unknown_ignore_name_is_refused(make_ctx):
    with pytest.raises(ConfigError) as info:
        plugin.apply(MLP(SHAPE, 10, hidden=(8,)), ChannelConfig(ignore=["head"]), make_ctx())
    assert info.value.key == "ignore" and info.value.value == ["head"]
    assert "['1', '3']" in info.value.expected


def test_a_model_without_a_detectable_classifier_needs_ignore(make_ctx):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 7))  # 7 != 10 classes
    with pytest.raises(ConfigError, match=r"^ignore=\[\] is invalid: expected the output layer's name"):
        plugin.apply(model, ChannelConfig(), make_ctx())
    plugin.apply(model, ChannelConfig(ignore=["3"]), make_ctx())
    assert model[3].out_features == 7


def test_zero_ratio_removes_nothing(make_ctx):
    torch.manual_seed(0)
    model = MLP(SHAPE, 10, hidden=(32,))
    before = copy.deepcopy(model.state_dict())
    plugin.apply(model, ChannelConfig(ratio=0.0), make_ctx())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("importance", ["l2", "taylor", "random"])
@pytest.mark.parametrize("global_pruning", [False, True])
def test_every_criterion_and_scope_prunes_and_reloads(importance, global_pruning, make_ctx, tmp_path):
    seed_everything(0)
    base = ModelArtifact.build(ModelSpec("lenet5"), SHAPE, 10)
    _, params0 = _costs(base.model)
    cfg = ChannelConfig(ratio=0.5, importance=importance, global_pruning=global_pruning)
    model = plugin.apply(copy.deepcopy(base.model), cfg, make_ctx()).eval()
    assert _costs(model)[1] <= 0.6 * params0
    x = torch.rand(4, *SHAPE)
    assert torch.equal(_save_and_load(base, model, cfg, tmp_path / "m.pt")(x), model(x))


def test_iterative_steps_fine_tune_after_each_step(make_ctx):
    torch.manual_seed(0)
    ctx = make_ctx(epochs=1)
    model = plugin.apply(MLP(SHAPE, 10, hidden=(64,)), ChannelConfig(ratio=0.5, iterative_steps=2), ctx)
    assert model[1].out_features == 32
    assert len(ctx.history) == 2  # one fine-tuning epoch after each of the two steps


def test_fine_tuning_recovers_accuracy(trained_mlp, make_ctx, digits_splits):
    test = digits_splits[2]
    dense = evaluate(trained_mlp, test)[0]
    cfg = ChannelConfig(ratio=0.75)
    ctx = make_ctx(epochs=3, lr=1e-2)
    pruned = plugin.apply(copy.deepcopy(trained_mlp), cfg, ctx)
    assert pruned[1].out_features == 16
    assert dense > 0.9 and evaluate(pruned, test)[0] >= dense - 0.04


def test_restore_refuses_a_record_that_does_not_fit():
    with pytest.raises(ConfigError, match="structure"):
        restore(MLP(SHAPE, 10, hidden=(8,)), ChannelConfig(), None)
    with pytest.raises(ConfigError, match=r"structure\.widths\.1=16 is invalid: expected at most 8"):
        restore(MLP(SHAPE, 10, hidden=(8,)), ChannelConfig(), {"widths": {"1": [16, 64]}})
    with pytest.raises(ConfigError, match=r"structure\.widths='nope'"):
        restore(MLP(SHAPE, 10, hidden=(8,)), ChannelConfig(), {"widths": {"nope": [1, 1]}})


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": 1.0}, "ratio=1.0 is invalid: expected a number with 0.0 <= ratio < 1.0"),
        ({"ratio": -0.1}, "ratio=-0.1 is invalid: expected a number with 0.0 <= ratio < 1.0"),
        (
            {"importance": "l3"},
            "importance='l3' is invalid: expected one of ['l1', 'l2', 'taylor', 'random']",
        ),
        ({"global_pruning": "yes"}, "global_pruning='yes' is invalid: expected true or false"),
        (
            {"iterative_steps": 0},
            "iterative_steps=0 is invalid: expected an integer with 1 <= iterative_steps",
        ),
        ({"ignore": "fc"}, "ignore='fc' is invalid: expected a list of module names"),
        ({"taylor_batches": 0}, "taylor_batches=0 is invalid: expected an integer with 1 <= taylor_batches"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        ChannelConfig(**options)
    assert str(info.value).startswith(message)


def test_config_in_a_stage_and_round_trip():
    with pytest.raises(ConfigError, match=r"^prune\.options\.channel\.ratio=1\.5 is invalid"):
        PruneStage(method="channel", options={"channel": {"ratio": 1.5}})
    cfg = plugin.config({})
    assert cfg == ChannelConfig(0.5, "l1", False, 1, [], 4)
    assert ChannelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.slow
def test_mnist_seed_cnn_acceptance(tmp_path):
    """seed_cnn on MNIST (2 epochs), ratio 0.5 + 1 fine-tuning epoch: >= 45 % fewer params and MACs."""
    from shrinkflow.core.datasets import mnist

    seed_everything(0)
    raw = mnist("/work/shared/datasets/mnist")
    train, val, test = split_data(raw, 0.0833, 0.2, seed=0)
    base = ModelArtifact.build(ModelSpec("seed_cnn"), (1, 28, 28), 10)
    fit(base.model, train, TrainConfig(epochs=2, batch_size=128))
    dense = evaluate(base.model, test)[0]
    macs0, params0 = _costs(base.model, (1, 28, 28))
    assert params0 == 206_922
    ctx = Context(
        train, val, fit=partial(fit, train=train, cfg=TrainConfig(epochs=1, batch_size=128), val=val)
    )
    cfg = ChannelConfig(ratio=0.5)
    pruned = plugin.apply(copy.deepcopy(base.model), cfg, ctx).eval()
    macs1, params1 = _costs(pruned, (1, 28, 28))
    assert params1 <= 0.55 * params0 and macs1 <= 0.55 * macs0
    assert dense > 0.97 and evaluate(pruned, test)[0] >= dense - 0.01
    x = test.head(512)
    assert torch.equal(_save_and_load(base, pruned, cfg, tmp_path / "m.pt")(x), pruned(x))


@pytest.mark.parametrize(
    ("name", "kwargs"), [("resnet20", {"width": 8}), ("mobilenet_v2", {"width_mult": 0.25})]
)
def test_residual_and_depthwise_networks_stay_consistent_and_reload_identically(
    name, kwargs, make_ctx, tmp_path
):
    """Torch-Pruning's dependency graph cuts a residual sum's inputs together and keeps every
    depthwise convolution's groups equal to its channels; the artifact rebuilds the same widths."""
    seed_everything(0)
    base = ModelArtifact.build(ModelSpec(name, kwargs), SHAPE, 10)
    macs0, params0 = _costs(base.model)
    cfg = ChannelConfig(ratio=0.5)
    pruned = plugin.apply(copy.deepcopy(base.model), cfg, make_ctx(epochs=0)).eval()
    macs1, params1 = _costs(pruned)
    assert macs1 < 0.35 * macs0 and params1 < 0.35 * params0
    for module in pruned.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1:
            assert module.groups == module.in_channels == module.out_channels
    if name == "resnet20":  # each block's output width equals its shortcut's
        for block in pruned.layers:
            short = block.shortcut[0].out_channels if isinstance(block.shortcut, nn.Sequential) else None
            assert block.conv2.out_channels == (short or block.conv1.in_channels)
    x = torch.rand(8, *SHAPE)
    assert torch.equal(_save_and_load(base, pruned, cfg, tmp_path / "m.pt")(x), pruned(x))
