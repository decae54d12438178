"""ResNet-20/56 and MobileNetV2 (CIFAR forms): sizes from the papers, any input size, traceable."""

from __future__ import annotations

import pytest
import torch
import torch.fx
from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.convnets import mobilenet_v2, resnet20, resnet56
from shrinkflow.core.models import ModelSpec, build_model


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnets_have_the_papers_depth_and_size():
    r20, r56 = resnet20((3, 32, 32), 10), resnet56((3, 32, 32), 10)
    convs = lambda m: [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3)]  # noqa: E731
    # 6n+2 weighted layers: 6n 3x3 convs in the blocks + the stem + the classifier
    assert len(convs(r20)) == 19 and len(convs(r56)) == 55
    # He et al. report 0.27M and 0.85M; the 1x1 projection shortcuts (option B) add 2,752
    assert _params(r20) == 272_474 and _params(r56) == 855_770
    assert sum(isinstance(m, nn.BatchNorm2d) for m in r20.modules()) == 19 + 2


def test_mobilenet_v2_is_depthwise_with_inverted_residuals():
    model = mobilenet_v2((3, 32, 32), 10)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) == 17  # one per inverted-residual block
    assert 2.2e6 < _params(model) < 2.3e6  # the CIFAR MobileNetV2 (kuangliu): 2.24M
    half = mobilenet_v2((3, 32, 32), 10, width_mult=0.5)
    assert _params(half) < 0.5 * _params(model)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_any_image_size_and_channel_count(name, shape):
    model = build_model(ModelSpec(name), shape, 7).eval()
    assert model(torch.rand(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("factory", [resnet20, mobilenet_v2])
def test_fx_traces_them(factory):
    model = factory((1, 8, 8), 10).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(traced(x), model(x))


def test_tabular_input_is_refused_naming_the_model():
    with pytest.raises(
        ConfigError, match=r"input_shape=\(30,\) is invalid: expected images \(C, H, W\) for ResNet"
    ):
        resnet20((30,), 2)
