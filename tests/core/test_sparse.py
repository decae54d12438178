"""Sparse CSR Linear layers: the same outputs as the dense layer, and artifacts that reload safely."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact as artifacts
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.measure import count_parameters
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.sparse import SparseCSRConfig, SparseLinear, restore, sparse_layers, sparsify


def _pruned_mlp(sparsity: float, seed: int = 0) -> ModelArtifact:
    torch.manual_seed(seed)
    artifact = ModelArtifact.build(ModelSpec("mlp", {"hidden": [96, 48]}), (64,), 10)
    with torch.no_grad():
        for module in artifact.model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                cut = w.abs().flatten().kthvalue(int(sparsity * w.numel())).values
                w.mul_(w.abs() > cut)
    return artifact


def test_a_sparse_linear_computes_what_the_dense_layer_computes():
    dense = _pruned_mlp(0.9).model.eval()
    x = torch.randn(33, 64)
    expected = dense(x)
    model, layers = sparsify(dense, SparseCSRConfig(min_sparsity=0.5))
    assert len(layers) == 3 and sparse_layers(model) == list(layers)
    first = model.get_submodule(next(iter(layers)))
    assert isinstance(first, SparseLinear) and first.values.numel() == layers[next(iter(layers))]
    # 90% sparse: a tenth of the weights stored (ties at the cut keep a few more)
    assert first.values.numel() <= 0.11 * 96 * 64
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert count_parameters(model) == count_parameters(_pruned_mlp(0.9).model)  # counted as the dense layer


def test_layers_below_the_sparsity_threshold_stay_dense():
    model, layers = sparsify(_pruned_mlp(0.3).model, SparseCSRConfig(min_sparsity=0.5))
    assert layers == {} and not sparse_layers(model)
    with pytest.raises(ConfigError, match=r"min_sparsity=1.0 .*0.0 <= min_sparsity < 1.0"):
        SparseCSRConfig(min_sparsity=1.0)


def test_a_sparse_artifact_reloads_with_weights_only_to_the_same_outputs():
    base = _pruned_mlp(0.92)
    model, layers = sparsify(base.model, SparseCSRConfig())
    step = {
        "family": plugins.RUNTIMES,
        "method": "sparse_csr",
        "config": {"min_sparsity": 0.5},
        "structure": {"layers": layers},
    }
    sparse = ModelArtifact(model.eval(), base.spec, base.input_shape, base.num_classes, [step])
    data = artifacts.to_bytes(sparse)
    payload = torch.load(io.BytesIO(data), weights_only=True)  # plain tensors only: no pickled objects
    assert {k for k in payload["state_dict"] if k.endswith("values")} == {f"{n}.values" for n in layers}
    reloaded = artifacts.from_bytes(data)
    x = torch.randn(17, 64)
    assert torch.equal(reloaded.model(x), sparse.model(x))
    # the CSR file is smaller than the dense one: 8% of the weights (+ indices) instead of all
    assert len(data) < 0.45 * len(artifacts.to_bytes(_pruned_mlp(0.92)))


def test_restore_names_a_layer_that_is_not_linear():
    model = _pruned_mlp(0.9).model
    with pytest.raises(ConfigError, match=r"sparse_csr.structure.layers='2' .*a Linear layer, not ReLU"):
        restore(model, SparseCSRConfig(), {"layers": {"2": 10}})
    with pytest.raises(ConfigError, match=r"sparse_csr.structure=None"):
        restore(model, SparseCSRConfig(), None)
