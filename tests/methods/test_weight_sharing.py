"""k-means weight sharing: at most 2**bits values per layer, zeros kept, centroids fine-tuned, accuracy kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import LeNet5
from shrinkflow.core.sparsity import prunable
from shrinkflow.core.training import evaluate
from shrinkflow.methods.quantization.weight_sharing import WeightSharingConfig, kmeans_codebook, plugin


def _distinct_nonzero(model) -> dict[str, int]:
    return {n: len(torch.unique(m.weight[m.weight != 0])) for n, m in prunable(model)}


def test_registered():
    assert plugins.load(plugins.QUANTIZERS, "weight_sharing") is plugin


def test_kmeans_on_two_clumps_finds_their_means():
    values = np.concatenate([np.full(50, -1.0), np.full(50, 2.0)]) + np.tile([-0.01, 0.01], 50)
    centroids, labels = kmeans_codebook(values, 2, "linear", seed=0)
    assert sorted(centroids) == pytest.approx([-1.0, 2.0], abs=1e-6)
    assert len(set(labels[:50])) == 1 and labels[0] != labels[-1]


@pytest.mark.parametrize("bits", [2, 4])
def test_each_layer_has_at_most_2_to_the_bits_values_and_accuracy_holds(
    trained_mlp, make_ctx, digits_splits, bits
):
    _, _, test = digits_splits
    before = evaluate(trained_mlp, test)[0]
    out = plugin.apply(trained_mlp, WeightSharingConfig(bits=bits), make_ctx(epochs=2, lr=1e-3))
    assert all(1 < k <= 2**bits for k in _distinct_nonzero(out).values())
    drop = before - evaluate(out, test)[0]
    assert drop <= (0.01 if bits == 4 else 0.06)  # 16 shared values lose at most 1 point; 4 at most 6


def test_pruned_zeros_stay_zero_and_only_the_codebook_trains(trained_mlp, make_ctx):
    for _, m in prunable(trained_mlp):
        prune.l1_unstructured(m, "weight", amount=0.8)
        prune.remove(m, "weight")
    zeros = {n: m.weight == 0 for n, m in prunable(trained_mlp)}
    ctx = make_ctx(epochs=1, lr=1e-3)
    out = plugin.apply(trained_mlp, WeightSharingConfig(bits=3), ctx)
    for n, m in prunable(out):
        assert torch.equal(m.weight == 0, zeros[n])
        assert not hasattr(m, "parametrizations")
    assert len(ctx.history) == 1  # centroid fine-tuning ran
    assert all(k <= 8 for k in _distinct_nonzero(out).values())


def test_conv_layers_use_conv_bits_and_overrides_win(make_ctx):
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10)
    cfg = WeightSharingConfig(bits=2, conv_bits=3, layer_bits={"classifier.4": 1})
    out = plugin.apply(model, cfg, make_ctx(epochs=0))
    k = _distinct_nonzero(out)
    assert k["features.0"] <= 8 and k["features.3"] <= 8
    assert k["classifier.0"] <= 4 and k["classifier.4"] <= 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bits": 0}, r"bits=0 is invalid: expected an integer with 1 <= bits <= 16"),
        ({"conv_bits": 2.5}, r"conv_bits=2.5"),
        ({"init": "kmeans++"}, r"init='kmeans\+\+'.*'linear', 'density', 'random'"),
        ({"layer_bits": {"fc": 40}}, r"layer_bits.fc=40"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        WeightSharingConfig.from_dict(options)
