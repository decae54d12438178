"""Convolutional networks with BatchNorm, residual connections and depthwise convolutions, in
their CIFAR-sized forms (small inputs: MNIST 28x28, CIFAR 32x32, digits 8x8).

* :func:`resnet20`, :func:`resnet56`: He et al. 2016, "Deep Residual Learning for Image
  Recognition", section 4.2: a 3x3 stem of 16 channels, three stages of ``n`` basic blocks with
  16/32/64 channels (stride 2 entering stages 2 and 3), global average pooling, a linear head;
  6n+2 layers. Where a block changes width, its shortcut is a 1x1 convolution + BatchNorm (the
  paper's option B) rather than zero-padding (option A): a real layer that structural pruners
  and quantizers see: ResNet-20 has 272,474 parameters on 3-channel input (option A: 269,722).
* :func:`mobilenet_v2`: Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", with the common CIFAR adaptation: a stride-1 stem and stride 1 in the second
  stage, so a 32x32 input is downsampled 8x, not 32x. ``width_mult`` scales every width
  (rounded to multiples of 8, as in the paper's reference code).

Every forward is plain tensor code, so torch.fx, torch.export and Torch-Pruning all trace it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shrinkflow.core.config import ConfigError

__all__ = ["MobileNetV2", "ResNetCifar", "mobilenet_v2", "resnet20", "resnet56"]


def _image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            "input_shape", tuple(input_shape), f"images (C, H, W) for {model}; tabular data needs mlp"
        )
    c, h, w = (int(d) for d in input_shape)
    return c, h, w


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(c_in, c_out, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(c_out, c_out, 3)
        self.shortcut = (
            nn.Sequential(*_conv_bn(c_in, c_out, 1, stride))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """ResNet for small images with ``blocks`` basic blocks per stage (depth 6 * blocks + 2)."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, blocks: int = 3, width: int = 16
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape(input_shape, "ResNet")
        if not isinstance(blocks, int) or blocks < 1:
            raise ConfigError("blocks", blocks, "an integer >= 1 (blocks per stage)")
        if not isinstance(width, int) or width < 1:
            raise ConfigError("width", width, "an integer >= 1 (channels of the first stage)")
        self.stem = nn.Sequential(*_conv_bn(c, width, 3), nn.ReLU())
        layers: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet20(input_shape: Sequence[int], num_classes: int, width: int = 16) -> ResNetCifar:
    """ResNet-20 (He et al. 2016, CIFAR): 3 blocks per stage, about 0.27M parameters."""
    return ResNetCifar(input_shape, num_classes, blocks=3, width=width)


def resnet56(input_shape: Sequence[int], num_classes: int, width: int = 16) -> ResNetCifar:
    """ResNet-56 (He et al. 2016, CIFAR): 9 blocks per stage, about 0.86M parameters."""
    return ResNetCifar(input_shape, num_classes, blocks=9, width=width)


def _divisible(value: float, divisor: int = 8) -> int:
    """The reference code's rounding: to a multiple of 8, never below 90% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """1x1 expansion (skipped at t=1) -> 3x3 depthwise -> 1x1 linear projection; identity
    shortcut when the stride is 1 and the width unchanged."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(c_in, hidden, 1), nn.ReLU6()]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6()]
        layers += _conv_bn(hidden, c_out, 1)
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


# (expansion t, output channels c, repeats n, stride s) of the paper's Table 2; the CIFAR form
# uses stride 1 in the second row (and a stride-1 stem).
_MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018), CIFAR-style strides; ``width_mult`` scales the widths."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        width_mult: float = 1.0,
        last_channels: int = 1280,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        c, _, _ = _image_shape(input_shape, "MobileNetV2")
        if not isinstance(width_mult, (int, float)) or not 0.0 < width_mult <= 4.0:
            raise ConfigError("width_mult", width_mult, "a number with 0 < width_mult <= 4")
        if not isinstance(last_channels, int) or last_channels < 1:
            raise ConfigError("last_channels", last_channels, "an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", dropout, "0 <= dropout < 1")
        c_in = _divisible(32 * width_mult)
        last = _divisible(last_channels * max(1.0, width_mult))
        features: list[nn.Module] = [nn.Sequential(*_conv_bn(c, c_in, 3), nn.ReLU6())]
        for t, c_out, n, s in _MOBILENET_V2:
            c_out = _divisible(c_out * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(nn.Sequential(*_conv_bn(c_in, last, 1), nn.ReLU6()))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


#: the entry point's name for the class (its signature is the factory's)
mobilenet_v2 = MobileNetV2
