"""Sparsity bookkeeping: prunable layers, uniform weight access, zeros frozen during training."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.models import MLP, LeNet5
from shrinkflow.core.sparsity import frozen_zeros, prunable, weight_tensors


def _quantized(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(32,))


def _zero_half(layer: nn.Linear) -> torch.Tensor:
    """Zero every other weight of ``layer``; return the zero mask."""
    mask = torch.zeros_like(layer.weight, dtype=torch.bool)
    mask.view(-1)[::2] = True
    with torch.no_grad():
        layer.weight[mask] = 0.0
    return mask


def test_prunable_lists_linear_and_conv_layers_in_order():
    assert [n for n, _ in prunable(_mlp())] == ["1", "3"]
    names = [n for n, _ in prunable(LeNet5((1, 28, 28), 10))]
    assert names == ["features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"]
    assert prunable(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3))) == []


def test_weight_tensors_yields_weights_and_biases_of_float_and_quantized_models():
    model = _mlp()
    float_tensors = dict(weight_tensors(model))
    assert list(float_tensors) == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert torch.equal(float_tensors["1.weight"], model[1].weight)
    assert not float_tensors["1.weight"].requires_grad  # detached
    quantized = dict(weight_tensors(_quantized(model)))
    assert list(quantized) == list(float_tensors)
    for name, tensor in quantized.items():
        assert not tensor.is_quantized and tensor.dtype == torch.float32
        assert tensor.shape == float_tensors[name].shape
        assert torch.allclose(tensor, float_tensors[name], atol=float_tensors[name].abs().max() / 100)


def test_frozen_zeros_keeps_zeros_zero_through_optimizer_steps():
    model = _mlp()
    mask = _zero_half(model[1])
    before = model[1].weight.detach().clone()
    before_dense = model[3].weight.detach().clone()
    x, y = torch.rand(16, 1, 8, 8), torch.arange(16) % 10
    with frozen_zeros(model) as same:
        assert same is model
        assert hasattr(model[1], "weight_orig") and hasattr(model[1], "weight_mask")
        assert not hasattr(model[3], "weight_orig")  # a dense layer is left alone
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        assert bool((model[1].weight[mask] == 0).all())
    weight = model[1].weight
    assert bool((weight[mask] == 0).all()) and int((weight == 0).sum()) == int(mask.sum())
    assert not torch.equal(weight[~mask], before[~mask])  # the kept weights did train
    assert not torch.equal(model[3].weight, before_dense)
    # the reparametrization is gone: a plain parameter named weight, no hooks, plain state_dict keys
    assert isinstance(weight, nn.Parameter) and weight.requires_grad
    assert not hasattr(model[1], "weight_orig") and not hasattr(model[1], "weight_mask")
    assert not model[1]._forward_pre_hooks
    assert sorted(model.state_dict()) == ["1.bias", "1.weight", "3.bias", "3.weight"]  # order may change
    assert all("orig" not in n and "mask" not in n for n, _ in model.named_parameters())


def test_zeros_train_again_after_the_block():
    model = _mlp()
    mask = _zero_half(model[1])
    with frozen_zeros(model):
        pass
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(torch.rand(16, 1, 8, 8)), torch.arange(16) % 10).backward()
    opt.step()
    assert int((model[1].weight[mask] != 0).sum()) > 0


def test_frozen_zeros_cleans_up_when_the_block_raises():
    model = _mlp()
    _zero_half(model[3])
    with pytest.raises(RuntimeError, match="boom"), frozen_zeros(model):
        raise RuntimeError("boom")
    assert not hasattr(model[3], "weight_orig")
    assert sorted(model.state_dict()) == ["1.bias", "1.weight", "3.bias", "3.weight"]  # order may change


def test_frozen_zeros_on_a_dense_model_is_a_no_op():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_zeros(model):
        assert not any(hasattr(m, "weight_orig") for _, m in prunable(model))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_frozen_zeros_holds_conv_zeros():
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10)
    conv = model.features[0]
    with torch.no_grad():
        conv.weight[:3] = 0.0  # three whole filters
    with frozen_zeros(model):
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(model(torch.rand(8, 1, 8, 8)), torch.arange(8)).backward()
            opt.step()
    assert (
        int(torch.count_nonzero(conv.weight[:3])) == 0 and int(torch.count_nonzero(conv.weight[3:])) == 3 * 25
    )
