"""The built-in model zoo and the spec that rebuilds any model (built-in or the user's own).

Every factory takes ``input_shape`` (C, H, W) and ``num_classes`` from the data, plus its own
keyword arguments from configuration. A :class:`ModelSpec` names the factory (a registered name or
an import path ``package.module:Class``) and holds those arguments, so an artifact can rebuild the
architecture in a fresh process without unpickling code.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import Config, ConfigError

__all__ = ["MLP", "LeNet5", "LeNet5Caffe", "ModelSpec", "SeedCNN", "build_model", "lenet_300_100"]


class MLP(nn.Sequential):
    """Fully connected ReLU network on flattened images."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
    ) -> None:
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ConfigError("hidden", list(hidden), "a non-empty list of positive layer widths")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", dropout, "0 <= dropout < 1")
        widths = [int(torch.tensor(input_shape).prod()), *map(int, hidden)]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in itertools.pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], num_classes))
        super().__init__(*layers)


def lenet_300_100(input_shape: Sequence[int], num_classes: int) -> MLP:
    """LeNet-300-100 (LeCun et al. 1998), the MLP of Deep Compression's MNIST table."""
    return MLP(input_shape, num_classes, hidden=(300, 100))


def _flat_size(features: nn.Module, input_shape: Sequence[int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, *input_shape)).numel())


class LeNet5(nn.Module):
    """LeNet-5: conv 6@5x5 -> pool -> conv 16@5x5 -> pool -> 120 -> 84 -> classes.

    On 28x28 input this is the classic network. Inputs smaller than 16 px (8x8 digits) pad the
    second convolution too, so the feature map does not vanish.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, _ = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=2 if h < 16 else 0),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet5Caffe(nn.Module):
    """The "LeNet-5" of Deep Compression's MNIST table: Caffe's LeNet, conv 20@5x5 -> pool -> conv
    50@5x5 -> pool -> 500 -> classes; 431,080 parameters (1,720 KB in fp32) on 28x28 input.

    Caffe's prototxt has no ReLU after the convolutions; one after each pooling is added here (it
    trains faster and adds no parameters). Inputs smaller than 16 px pad the convolutions.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, _ = input_shape
        pad = 2 if h < 16 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 20, 5, padding=pad),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(20, 50, 5, padding=pad),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), 500),
            nn.ReLU(),
            nn.Linear(500, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SeedCNN(nn.Module):
    """The small CNN of the seed article: conv 16@3x3 -> pool -> conv 32@3x3 -> pool -> 128 -> classes.

    The article's listing omits the pooling its ``view(-1, 32*8*8)`` needs; with the two 2x2 pools
    restored it has 206,922 parameters on 28x28 MNIST.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, width: int = 16, hidden: int = 128
    ) -> None:
        super().__init__()
        if width < 1 or hidden < 1:
            raise ConfigError("width/hidden", (width, hidden), "positive integers")
        c = input_shape[0]
        self.features = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(_flat_size(self.features, input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@dataclass
class ModelSpec(Config):
    """Which architecture: a registered model name or ``package.module:Class``, plus its kwargs."""

    name: str = "mlp"
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", self.name, "a registered model name or 'package.module:Class'")
        if not isinstance(self.kwargs, dict):
            raise ConfigError("kwargs", self.kwargs, "a mapping of keyword arguments")
        if ":" not in self.name:
            plugins.info(plugins.MODELS, self.name)  # unknown names fail early, listing the known ones

    def factory(self) -> Any:
        if ":" in self.name:
            return plugins.load_object(self.name)
        return plugins.load(plugins.MODELS, self.name)


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate ``spec`` for the data's input shape and class count.

    ``input_shape`` and ``num_classes`` are passed only to factories whose signature accepts them,
    so a user's own class with a fixed architecture works unchanged.
    """
    factory = spec.factory()
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    auto = {"input_shape": tuple(input_shape), "num_classes": int(num_classes)}
    kwargs = {k: v for k, v in auto.items() if accepts_any or k in params}
    try:
        model = factory(**kwargs, **spec.kwargs)
    except ConfigError as exc:
        raise exc.under(f"model {spec.name}") from None
    except TypeError as exc:
        raise ConfigError(
            f"model {spec.name}.kwargs", spec.kwargs, f"arguments its constructor accepts ({exc})"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "model.name", spec.name, f"a factory returning torch.nn.Module, got {type(model).__name__}"
        )
    return model
