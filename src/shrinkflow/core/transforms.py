"""Image transforms from configuration, through ``torchvision.transforms.v2``.

``data.transforms`` is a list of steps, each a name (``horizontal_flip``), a name with its first
argument (``resize: 32``) or a name with keyword arguments (``random_crop: {size: 32, padding: 4}``).
Names are the snake-case ones below or any ``torchvision.transforms.v2`` class name
(``RandomRotation: {degrees: 10}``)::

    transforms:
      - resize: 36
      - random_crop: {size: 32, padding: 4}     # augmentation: training split only
      - horizontal_flip                          # augmentation (p = 0.5)
      - normalize: {mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26]}

One list serves every split. Random steps (augmentation) run on the training split only; on
validation and test a ``random_resized_crop`` of ``size`` becomes ``resize(size / 0.875)`` +
``center_crop(size)`` (the usual evaluation crop), a ``random_crop`` a ``center_crop`` of its size,
and other random steps are dropped.

Steps run per sample on the image as the source stores it (uint8 0..255 or float 0..1); the
batch is then converted to float32 in [0, 1], to ``data.channels`` channels (1 -> 3 repeats the
channel, 3 -> 1 averages), and trailing ``normalize`` steps run once on the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision.transforms.v2 as v2

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import DataError

__all__ = ["Pipeline", "build_steps", "to_float"]

#: snake-case names of the common steps, and the v2 class each builds
NAMES = {
    "resize": "Resize",
    "center_crop": "CenterCrop",
    "random_resized_crop": "RandomResizedCrop",
    "random_crop": "RandomCrop",
    "horizontal_flip": "RandomHorizontalFlip",
    "vertical_flip": "RandomVerticalFlip",
    "rotation": "RandomRotation",
    "color_jitter": "ColorJitter",
    "normalize": "Normalize",
    "grayscale": "Grayscale",
    "rgb": "RGB",
    "pad": "Pad",
}
#: random v2 steps whose names do not start with ``Random``
_AUGMENTING = {"ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix", "GaussianBlur",
               "GaussianNoise", "ElasticTransform", "JPEG", "ScaleJitter"}  # fmt: skip
#: v2 classes that are not per-image steps of a classification input
_REFUSED = {"Compose", "Lambda", "MixUp", "CutMix", "ToPILImage", "PILToTensor", "ToImage", "ToTensor",
            "ToPureTensor", "FiveCrop", "TenCrop", "RandomApply", "RandomChoice", "RandomOrder",
            "LinearTransformation", "ConvertImageDtype", "ToDtype", "Transform", "RandomIoUCrop"}  # fmt: skip
#: the usual evaluation crop: resize to size / 0.875, then centre-crop ``size``
_EVAL_CROP = 0.875


def _parse(step: Any, key: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    if isinstance(step, str):
        name, value = step, None
    elif isinstance(step, dict) and len(step) == 1:
        name, value = next(iter(step.items()))
    else:
        raise ConfigError(key, step, "a step name, or {name: argument} / {name: {keyword: value}}")
    cls = NAMES.get(name, name)
    if not isinstance(cls, str) or not hasattr(v2, cls) or cls in _REFUSED or not cls[0].isupper():
        raise ConfigError(key, name, f"one of {sorted(NAMES)} or a torchvision.transforms.v2 class name")
    if value is None:
        return cls, (), {}
    if isinstance(value, dict):
        return cls, (), dict(value)
    return cls, (value,), {}


def is_augmenting(cls: str) -> bool:
    return cls.startswith("Random") or cls in _AUGMENTING


def build_steps(steps: Sequence[Any], key: str = "transforms") -> list[tuple[str, v2.Transform]]:
    """``(class name, transform)`` per configured step; ConfigError naming the step otherwise."""
    if not isinstance(steps, (list, tuple)):
        raise ConfigError(key, steps, "a list of transform steps")
    built = []
    for i, step in enumerate(steps):
        cls, args, kwargs = _parse(step, f"{key}[{i}]")
        try:
            built.append((cls, getattr(v2, cls)(*args, **kwargs)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key}[{i}]", step, f"arguments {cls} accepts ({exc})") from None
    return built


def _for_eval(cls: str, transform: v2.Transform) -> list[v2.Transform]:
    if cls == "RandomResizedCrop":
        size = list(transform.size)  # the shorter side to size / 0.875, then the centre crop
        return [v2.Resize(round(max(size) / _EVAL_CROP)), v2.CenterCrop(size)]
    if cls == "RandomCrop":
        return [v2.CenterCrop(list(transform.size))]
    return []


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 0..1 (a division, as the sources that load float data compute it);
    float tensors as they are."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class _ToFloat:
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return to_float(x)


class _Items:
    """Per-sample steps, in order (picklable for DataLoader workers)."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


class Pipeline:
    """The configured steps for one split (``train``: with augmentation) and the batch assembly."""

    def __init__(
        self, steps: Sequence[Any] = (), *, train: bool = False, channels: int | None = None
    ) -> None:
        built = build_steps(steps)
        tail = []
        while built and built[-1][0] == "Normalize":
            tail.insert(0, built.pop()[1])
        items: list[Any] = []
        for cls, transform in built:
            if cls == "Normalize" and not any(isinstance(s, _ToFloat) for s in items):
                items.append(_ToFloat())
            if train or not is_augmenting(cls):
                items.append(transform)
            else:
                items.extend(_for_eval(cls, transform))
        self.items = _Items(items) if items else None
        self.tail = tail
        self.channels = channels

    def batch(self, source: Any, indices: torch.Tensor) -> torch.Tensor:
        """The inputs of ``source``'s samples ``indices`` as one float32 batch."""
        x = None if self.items is not None else source.batch(indices)
        if x is None:
            return self.assemble(source.items(indices), source, indices)
        return self.finish(x)

    def assemble(self, items: list[torch.Tensor], source: Any, indices: torch.Tensor) -> torch.Tensor:
        """One batch from the stored inputs of ``source``'s samples ``indices``: per-sample steps,
        stacked, then the batch steps."""
        steps = self.items
        return self.finish(_stack([x if steps is None else steps(x) for x in items], source, indices))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The batch steps: scaled to float [0, 1], converted to ``channels``, trailing normalize."""
        x = self._convert(to_float(x))
        for step in self.tail:
            x = step(x)
        return x

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels is None or x.ndim != 4 or x.shape[1] == self.channels:
            return x
        c = int(x.shape[1])
        if c == 1:
            return x.expand(-1, self.channels, *x.shape[2:]).contiguous()
        if self.channels == 1:
            return x.mean(dim=1, keepdim=True)
        raise DataError(
            f"images have {c} channels; data.channels={self.channels} expects 1 or {self.channels}"
        )


def _stack(items: list[torch.Tensor], source: Any, indices: torch.Tensor) -> torch.Tensor:
    shapes: dict[tuple[int, ...], int] = {}
    for position, item in enumerate(items):
        shapes.setdefault(tuple(item.shape), position)
    if len(shapes) > 1:
        listed = "; ".join(
            f"{shape} e.g. {source.describe(int(indices[pos]))}" for shape, pos in sorted(shapes.items())
        )
        raise DataError(
            f"one batch holds samples of {len(shapes)} shapes ({listed}); expected one shape: add a "
            "`resize` (and `center_crop`) step to data.transforms"
        )
    return torch.stack(items) if items else torch.zeros(0)
