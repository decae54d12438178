"""N:M sparsity: the exact pattern, the n largest of each group kept, conv grouping, skips, recovery."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP, LeNet5
from shrinkflow.core.sparsity import prunable
from shrinkflow.core.training import evaluate
from shrinkflow.methods.pruning.nm import NMConfig, nm_mask, nm_patterns, nm_prune, plugin
from shrinkflow.stages import PruneStage


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(64, 32))


def _groups(weight: torch.Tensor, m: int) -> torch.Tensor:
    """(rows, groups, m): groups of m consecutive weights along the input dimension (dim 1)."""
    w = weight.detach().movedim(1, -1)
    return w.reshape(-1, w.shape[-1] // m, m)


def test_plugin_is_registered():
    assert plugins.load(plugins.PRUNERS, "nm") is plugin
    assert plugin.config_cls is NMConfig and plugin.apply is nm_prune and plugin.structure is nm_patterns


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8), (1, 2), (3, 16)])
def test_every_group_keeps_exactly_n_of_m(make_ctx, n, m):
    out = plugin.apply(_mlp(), NMConfig(n=n, m=m), make_ctx(epochs=1))
    for name, layer in prunable(out):
        nonzero = (_groups(layer.weight, m) != 0).sum(-1)
        assert bool((nonzero == n).all()), name  # exactly n, not "at most n"
        assert float((layer.weight == 0).float().mean()) == pytest.approx(1 - n / m), name
    assert not any(hasattr(layer, "weight_orig") or layer._forward_pre_hooks for _, layer in prunable(out))


def test_the_n_largest_magnitudes_of_each_group_are_kept(make_ctx):
    model = _mlp()
    original = {name: layer.weight.detach().clone() for name, layer in prunable(model)}
    out = plugin.apply(model, NMConfig(n=2, m=4), make_ctx())
    for name, layer in prunable(out):
        groups, kept = _groups(original[name], 4).abs(), _groups(layer.weight, 4) != 0
        smallest_kept = groups.masked_fill(~kept, float("inf")).amin(-1)
        largest_dropped = groups.masked_fill(kept, -1.0).amax(-1)
        assert bool((largest_dropped <= smallest_kept).all()), name
        assert torch.equal(
            layer.weight[layer.weight != 0], original[name][layer.weight != 0]
        )  # values as they were


def test_mask_on_a_small_example():
    w = torch.tensor([[0.1, -0.5, 0.3, 0.2, 9.0, -8.0, 0.0, 1.0]])
    assert nm_mask(w, 2, 4).tolist() == [[False, True, True, False, True, True, False, False]]
    assert nm_mask(w, 1, 2).tolist() == [[False, True, True, False, True, False, False, True]]


def test_convolutions_group_input_channels_and_indivisible_layers_are_skipped(make_ctx, caplog):
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10)  # conv in-channels 1 and 6; linear inputs 64, 120, 84
    with caplog.at_level(logging.WARNING):
        out = plugin.apply(model, NMConfig(n=1, m=2), make_ctx(epochs=1))
    assert "'features.0' left dense: its input dimension 1 is not a multiple of m=2" in caplog.text
    assert bool((out.features[0].weight != 0).all())
    conv = out.features[3].weight  # (16, 6, 5, 5): pairs of input channels at each (out, ky, kx)
    assert bool(((_groups(conv, 2) != 0).sum(-1) == 1).all())
    assert nm_patterns(out) == {
        "layers": {
            "features.0": {"pattern": "dense", "input_dim": 1},
            "features.3": {"pattern": "1:2", "input_dim": 6},
            "classifier.0": {"pattern": "1:2", "input_dim": 64},
            "classifier.2": {"pattern": "1:2", "input_dim": 120},
            "classifier.4": {"pattern": "1:2", "input_dim": 84},
        }
    }


def test_record_and_exclusions(make_ctx, caplog):
    model = MLP((1, 8, 8), 10, hidden=(60, 30))  # inputs 64, 60, 30: 30 is not a multiple of 4
    with caplog.at_level(logging.WARNING):
        out = plugin.apply(model, NMConfig(n=2, m=4, exclude=["1"]), make_ctx())
    assert "'5' left dense: its input dimension 30 is not a multiple of m=4" in caplog.text
    assert {n: r["pattern"] for n, r in nm_patterns(out)["layers"].items()} == {
        "1": "dense",
        "3": "2:4",
        "5": "dense",
    }
    with pytest.raises(ConfigError, match=r"^exclude=\['fc'\] is invalid: expected names of prunable layers"):
        plugin.apply(_mlp(), NMConfig(exclude=["fc"]), make_ctx())


def test_fine_tuning_keeps_the_pattern_and_recovers_accuracy(trained_mlp, make_ctx, digits_splits):
    test = digits_splits[2]
    cfg = NMConfig(n=1, m=8)
    before = evaluate(plugin.apply(copy.deepcopy(trained_mlp), cfg, make_ctx()), test)[0]
    torch.manual_seed(0)
    ctx = make_ctx(epochs=3, lr=1e-2)
    tuned = plugin.apply(copy.deepcopy(trained_mlp), cfg, ctx)
    after = evaluate(tuned, test)[0]
    assert [h.epoch for h in ctx.history] == [1, 2, 3]
    assert all(bool(((_groups(layer.weight, 8) != 0).sum(-1) == 1).all()) for _, layer in prunable(tuned))
    # measured: dense 0.936; 1:8 without training 0.68, after 3 epochs 0.875 (2:4: 0.91 -> 0.94)
    assert before < 0.8
    assert after > 0.83 and after > before + 0.1


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"m": 3}, "m=3 is invalid: expected one of [2, 4, 8, 16, 32]"),
        ({"m": "4"}, "m='4' is invalid: expected one of [2, 4, 8, 16, 32]"),
        ({"n": 4, "m": 4}, "n=4 is invalid: expected an integer with 1 <= n <= 3"),
        ({"n": 0}, "n=0 is invalid: expected an integer with 1 <= n <= 3"),
        ({"n": 1.5}, "n=1.5 is invalid: expected an integer with 1 <= n <= 3"),
        ({"n": 9, "m": 8}, "n=9 is invalid: expected an integer with 1 <= n <= 7"),
        ({"exclude": "1"}, "exclude='1' is invalid: expected a list of module names"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        NMConfig(**options)
    assert str(info.value) == message


def test_stage_errors_carry_the_dotted_key_and_defaults_round_trip():
    with pytest.raises(
        ConfigError, match=r"^prune\.options\.nm\.n=2 is invalid: expected an integer with 1 <= n <= 1"
    ):
        PruneStage(method="nm", options={"nm": {"n": 2, "m": 2}})
    cfg = plugin.config({})
    assert cfg == NMConfig(n=2, m=4, exclude=[])
    assert NMConfig.from_dict(cfg.to_dict()) == cfg
