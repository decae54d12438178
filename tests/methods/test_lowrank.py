"""Low-rank factorization: exact rank selection, parameter counts, full-rank identity, reload, config."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP, ModelSpec
from shrinkflow.core.training import evaluate, seed_everything
from shrinkflow.methods.factorization.lowrank import (
    LowRankConfig,
    LowRankPair,
    choose_ranks,
    factorize,
    lowrank,
    plugin,
    restore,
    select_rank,
    structure,
)
from shrinkflow.stages import PruneStage

SHAPE = (1, 8, 8)
SINGULAR = torch.tensor([4.0, 3.0, 2.0, 1.0])  # squared: 16, 9, 4, 1 of 30


def _known_matrix(out_dim: int = 6, in_dim: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(out_dim, 4, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_dim, 4, generator=g, dtype=torch.float64))
    return u @ torch.diag(SINGULAR.double()) @ v.T


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_plugin_is_registered():
    assert plugins.load(plugins.PRUNERS, "lowrank") is plugin
    assert plugin.apply is lowrank and plugin.restore is restore and plugin.structure is structure


@pytest.mark.parametrize(
    ("options", "rank"),
    [
        ({"energy": 0.5}, 1),  # 16/30 = 0.533
        ({"energy": 16 / 30}, 1),  # exactly reached counts
        ({"energy": 0.54}, 2),
        ({"energy": 25 / 30}, 2),
        ({"energy": 0.84}, 3),  # 25/30 = 0.833 < 0.84 <= 29/30
        ({"energy": 1.0}, 4),
        ({"rank": 2}, 2),
        ({"rank": 9}, 4),  # capped at full rank
    ],
)
def test_rank_selection_is_exact(options, rank):
    s = torch.linalg.svdvals(_known_matrix())
    assert torch.allclose(s[:4].float(), SINGULAR, atol=1e-6)
    assert select_rank(s, LowRankConfig.from_dict(options)) == rank


def test_factors_are_the_best_rank_r_approximation():
    layer = nn.Linear(4, 6)
    with torch.no_grad():
        layer.weight.copy_(_known_matrix())
    pair = factorize(layer, 2)
    approx = (pair[1].weight @ pair[0].weight).double()
    residual = torch.linalg.svdvals(layer.weight.double() - approx)
    assert torch.allclose(residual[:2], torch.tensor([2.0, 1.0], dtype=torch.float64), atol=1e-5)
    assert torch.equal(pair[1].bias, layer.bias) and pair[0].bias is None


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(20, 12),
        nn.Conv2d(3, 8, 3, stride=2, padding=1, dilation=2),
        nn.Conv2d(4, 6, (3, 5), padding="same", bias=False),
    ],
    ids=["linear", "conv-strided-dilated", "conv-same-nobias"],
)
def test_full_rank_factorization_reproduces_the_outputs(layer):
    torch.manual_seed(0)
    x = torch.randn(5, 20) if isinstance(layer, nn.Linear) else torch.randn(5, layer.in_channels, 11, 11)
    full = min(layer.weight.shape[0], layer.weight[0].numel())
    pair = factorize(layer, full)
    with torch.no_grad():
        assert torch.allclose(pair(x), layer(x), atol=1e-5)
    if isinstance(layer, nn.Conv2d):
        first, second = pair
        assert (first.stride, first.padding, first.dilation) == (layer.stride, layer.padding, layer.dilation)
        assert second.kernel_size == (1, 1) and first.out_channels == full


def test_parameter_count_falls_as_computed(make_ctx):
    torch.manual_seed(0)
    model = MLP(SHAPE, 10, hidden=(64, 32))
    before = _params(model)
    out = plugin.apply(model, LowRankConfig(rank=8, energy=None), make_ctx())
    # 64x64 -> 8*(64+64) and 32x64 -> 8*(64+32); the 10x32 classifier stays (8*42 = 336 >= 320)
    assert structure(out) == {"ranks": {"1": 8, "3": 8}}
    assert before - _params(out) == (64 * 64 - 8 * 128) + (32 * 64 - 8 * 96)
    assert isinstance(out[1], LowRankPair) and isinstance(out[5], nn.Linear)


def test_min_reduction_and_exclude_leave_layers_whole():
    torch.manual_seed(0)
    model = MLP(SHAPE, 10, hidden=(64, 32))
    assert choose_ranks(model, LowRankConfig(rank=8, energy=None, min_reduction=0.65)) == {"1": 8}
    assert choose_ranks(model, LowRankConfig(rank=8, energy=None, exclude=["1"])) == {"3": 8}
    with pytest.raises(ConfigError) as info:
        choose_ranks(model, LowRankConfig(exclude=["fc"]))
    assert info.value.key == "exclude" and "['1', '3', '5']" in info.value.expected


@pytest.mark.parametrize("name", ["seed_cnn", "lenet5", "mlp"])
def test_factorized_models_reload_identically(name, make_ctx, tmp_path):
    seed_everything(0)
    base = ModelArtifact.build(ModelSpec(name), SHAPE, 10)
    cfg = LowRankConfig(rank=3, energy=None)
    model = plugin.apply(copy.deepcopy(base.model), cfg, make_ctx(epochs=1)).eval()
    record = structure(model)
    assert record["ranks"] and set(record["ranks"].values()) == {3}
    assert _params(model) < _params(base.model)
    artifact.save(base.with_step(model, plugins.PRUNERS, "lowrank", cfg.to_dict(), record), tmp_path / "m.pt")
    x = torch.rand(16, *SHAPE)
    with torch.inference_mode():
        assert torch.equal(artifact.load(tmp_path / "m.pt").model(x), model(x))


def test_fine_tuning_recovers_accuracy(trained_mlp, make_ctx, digits_splits):
    test = digits_splits[2]
    dense = evaluate(trained_mlp, test)[0]
    ctx = make_ctx(epochs=3, lr=3e-3)
    model = plugin.apply(copy.deepcopy(trained_mlp), LowRankConfig(rank=6, energy=None), ctx)
    assert structure(model) == {"ranks": {"1": 6, "3": 6}}
    assert len(ctx.history) == 3 and evaluate(model, test)[0] >= dense - 0.04


def test_restore_refuses_a_record_that_does_not_fit():
    with pytest.raises(ConfigError, match="structure"):
        restore(MLP(SHAPE, 10, hidden=(8,)), LowRankConfig(), {})
    with pytest.raises(ConfigError, match=r"structure\.ranks='2'"):
        restore(MLP(SHAPE, 10, hidden=(8,)), LowRankConfig(), {"ranks": {"2": 3}})


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"rank": None, "energy": None},
            "rank={'rank': None, 'energy': None} is invalid: expected exactly one",
        ),
        ({"rank": 4, "energy": 0.9}, "rank={'rank': 4, 'energy': 0.9} is invalid: expected exactly one"),
        ({"rank": 0}, "rank=0 is invalid: expected an integer with 1 <= rank"),
        ({"rank": 2.5}, "rank=2.5 is invalid: expected an integer with 1 <= rank"),
        ({"energy": 0.0}, "energy=0.0 is invalid: expected a number with 0.0 < energy <= 1.0"),
        ({"energy": 1.1}, "energy=1.1 is invalid: expected a number with 0.0 < energy <= 1.0"),
        (
            {"min_reduction": 1.0},
            "min_reduction=1.0 is invalid: expected a number with 0.0 <= min_reduction < 1.0",
        ),
        ({"exclude": "fc"}, "exclude='fc' is invalid: expected a list of module names"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        LowRankConfig.from_dict(options)
    assert str(info.value).startswith(message)


def test_config_defaults_rank_alone_and_stage_keys():
    cfg = plugin.config({})
    assert cfg == LowRankConfig(rank=None, energy=0.9, exclude=[], min_reduction=0.0)
    assert LowRankConfig.from_dict(cfg.to_dict()) == cfg
    by_rank = LowRankConfig.from_dict({"rank": 8})  # naming rank alone drops the default energy
    assert by_rank.energy is None and LowRankConfig.from_dict(by_rank.to_dict()) == by_rank
    with pytest.raises(ConfigError, match=r"^prune\.options\.lowrank\.rank=\{'rank': 8, 'energy': 0\.5\}"):
        PruneStage(method="lowrank", options={"lowrank": {"rank": 8, "energy": 0.5}})
