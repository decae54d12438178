"""The built-in model zoo and the spec that rebuilds any model (built-in or the user's own).

Every factory takes ``input_shape`` ((C, H, W) for images, (F,) for tables) and ``num_classes`` from the data, plus its own
keyword arguments from configuration. A :class:`ModelSpec` names the factory (a registered name or
an import path ``package.module:Class``) and holds those arguments, so an artifact can rebuild the
architecture in a fresh process without unpickling code.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import Config, ConfigError
from shrinkflow.core.textmodels import huggingface, is_huggingface_class

__all__ = [
    "MLP",
    "LeNet5",
    "LeNet5Caffe",
    "ModelChoice",
    "ModelSpec",
    "SeedCNN",
    "build_model",
    "check_forward",
    "lenet_300_100",
]


class MLP(nn.Sequential):
    """Fully connected ReLU network on flattened images, or on table rows (``input_shape`` (F,))."""

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
    """Which architecture: a registered model name or ``package.module:factory``, plus the keyword
    arguments for it. This is the resolved form an artifact stores; configuration uses
    :class:`ModelChoice` (kwargs kept per model)."""

    name: str = "mlp"
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: a :class:`~shrinkflow.core.tables.Standardize` module in front of the model (its per-feature
    #: mean and std are buffers, fitted on the training split when the model is built)
    standardize: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("name", self.name, "a registered model name or 'package.module:Class'")
        if not isinstance(self.kwargs, dict):
            raise ConfigError("kwargs", self.kwargs, "a mapping of keyword arguments")
        if not isinstance(self.standardize, bool):
            raise ConfigError("standardize", self.standardize, "true or false")
        try:
            factory = self.factory()  # unknown names and wrong import paths fail here, before any node
        except plugins.PluginError as exc:
            known = plugins.available(plugins.MODELS)
            raise ConfigError(
                "name",
                self.name,
                f"a registered model {known} or an importable 'package.module:Class' ({exc})",
            ) from None
        if not callable(factory):
            raise ConfigError("name", self.name, f"a class or function, got {type(factory).__name__}")
        named, takes_any = _accepted(factory)
        unknown = [] if takes_any else sorted(set(self.kwargs) - named)
        if unknown:
            raise ConfigError(
                "kwargs", self.kwargs, f"arguments {self.name} accepts: {sorted(named)} (not {unknown})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Without ``standardize`` when it is off: specs (and artifacts) of models that take
        their inputs as they come stay as they were before the key existed."""
        out = super().to_dict()
        if not self.standardize:
            out.pop("standardize")
        return out

    def factory(self) -> Any:
        if ":" in self.name:
            return plugins.load_object(self.name)
        return plugins.load(plugins.MODELS, self.name)


@dataclass
class ModelChoice(Config):
    """A model as configured: ``name`` plus ``kwargs`` *per model* (``{model name: {arg: value}}``),
    as ``options`` are per method, so ``--params train_teacher.model.name=other`` never hands
    ``other`` the arguments written for the previous model. ``pretrained``: a local state-dict
    file loaded into the freshly built model before training (layers whose shapes differ, such as
    a classifier for another class count, keep their initialisation and are logged).
    ``standardize``: ``auto`` (table rows yes, images no), ``true`` or ``false``: a per-feature
    standardization fitted on the training split, stored in the model (see ``core.tables``)."""

    name: str = "mlp"
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pretrained: str | None = None
    standardize: str | bool = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.kwargs, dict):
            raise ConfigError("kwargs", self.kwargs, "a mapping {model name: {argument: value}}")
        for key, block in self.kwargs.items():
            if not isinstance(block, dict):
                raise ConfigError(
                    f"kwargs.{key}",
                    block,
                    "kwargs per model, {model name: {argument: value}}: e.g. kwargs: {mlp: {hidden: [256, 256]}}",
                )
        if self.pretrained is not None and (not isinstance(self.pretrained, str) or not self.pretrained):
            raise ConfigError("pretrained", self.pretrained, "null or the path of a state-dict file")
        if self.standardize not in ("auto", True, False):
            raise ConfigError("standardize", self.standardize, "auto (table rows only), true or false")
        try:
            self.spec = ModelSpec(self.name, dict(self.kwargs.get(self.name) or {}))
        except ConfigError as exc:
            key = "kwargs." + self.name if exc.key == "kwargs" else exc.key
            raise ConfigError(key, exc.value, exc.expected) from None

    @classmethod
    def of(cls, spec: ModelSpec) -> ModelChoice:
        return cls(spec.name, {spec.name: dict(spec.kwargs)}, standardize=spec.standardize)

    def spec_for(self, input_shape: Sequence[int], modality: str | None = None) -> ModelSpec:
        """The spec to build for inputs of ``input_shape`` (of ``modality`` when known): ``auto``
        standardizes table rows (F,), never token ids."""
        table = modality == "table" if modality is not None else len(input_shape) == 1
        on = table if self.standardize == "auto" else bool(self.standardize)
        return replace(self.spec, standardize=on)


def _accepted(factory: Any) -> tuple[set[str], bool]:
    """The keyword arguments ``factory`` names, and whether it takes ``**kwargs`` as well."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set(), True
    named = {
        n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"
    }
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def _offline_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return isinstance(exc, OSError) or any(w in text for w in ("download", "url", "hub", "connection"))


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Instantiate ``spec`` for the data's input shape and class count.

    ``input_shape`` and ``num_classes`` are passed only to factories that name them in their
    signature, never through ``**kwargs`` (``torchvision.models:resnet18`` forwards those to a
    class that takes no ``input_shape``), and never over a value the spec's kwargs set.
    """
    factory = spec.factory()
    if is_huggingface_class(factory):  # transformers:BertForSequenceClassification and the like
        return huggingface(input_shape, num_classes, factory, spec.kwargs.get("config"))
    named, _ = _accepted(factory)
    auto = {"input_shape": tuple(input_shape), "num_classes": int(num_classes)}
    kwargs = {k: v for k, v in auto.items() if k in named and k not in spec.kwargs}
    try:
        model = factory(**kwargs, **spec.kwargs)
    except ConfigError as exc:
        raise exc.under(f"model {spec.name}") from None
    except TypeError as exc:
        raise ConfigError(
            f"model {spec.name}.kwargs", spec.kwargs, f"arguments its constructor accepts ({exc})"
        ) from exc
    except Exception as exc:
        if _offline_error(exc):
            raise ConfigError(
                f"model {spec.name}.kwargs",
                spec.kwargs,
                "a model built without downloading (pretrained weights could not be fetched: "
                f"{type(exc).__name__}: {str(exc)[:200]}); download the weights elsewhere and give "
                "the state-dict file as model.pretrained",
            ) from exc
        raise
    if not isinstance(model, nn.Module):
        raise ConfigError(
            "model.name", spec.name, f"a factory returning torch.nn.Module, got {type(model).__name__}"
        )
    if spec.standardize:
        from shrinkflow.core.tables import Standardized

        return Standardized(model, input_shape)
    return model


def check_forward(model: nn.Module, spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> None:
    """One forward pass on a zero batch of the data's shape: the model must return ``(2,
    num_classes)`` logits (or an object with ``.logits``). Raises ConfigError naming what differs."""
    from shrinkflow.core.adapters import logits_of

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = logits_of(model(torch.zeros(2, *input_shape)))
    except Exception as exc:
        raise ConfigError(
            f"model {spec.name}",
            spec.kwargs,
            f"a model that accepts the data's batches of shape (N, {', '.join(map(str, input_shape))}) "
            f"({type(exc).__name__}: {str(exc)[:200]})",
        ) from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, int(num_classes)):
        raise ConfigError(
            f"model {spec.name}",
            spec.kwargs,
            f"logits of shape (N, {num_classes}) for the data's {num_classes} classes, got "
            f"{tuple(out.shape)[1:]} per sample (set num_classes in its kwargs?)",
        )
