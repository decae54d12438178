"""Where training runs and in which precision: resolved once per stage and passed down.

``device``: ``auto`` (CUDA if present, else Apple's MPS, else the CPU), ``cpu``, ``cuda``,
``cuda:N`` or ``mps``. ``precision``: ``fp32``, ``bf16`` or ``fp16`` through ``torch.autocast``
(weights stay float32; fp16 adds a ``GradScaler`` so small gradients do not underflow). Under
torchrun with nccl each rank trains on its own GPU (``LOCAL_RANK``), whatever ``device`` says.

Models always come back to the CPU after a stage: artifacts hold CPU tensors and load on a
machine without a GPU. int8 models (torch.ao / PT2E graphs) have CPU kernels only; they are
evaluated on the CPU (:func:`placement`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkflow.core import distributed
from shrinkflow.core.config import Config, ConfigError, check_choice, nested
from shrinkflow.core.loader import LoaderConfig

__all__ = ["PRECISIONS", "Runtime", "RuntimeConfig", "placement", "resolve_device"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` -> a device present on this machine;
    ConfigError naming what is missing otherwise."""
    if not isinstance(name, str):
        raise ConfigError(key, name, "auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(key, name, "auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise ConfigError(
                key,
                name,
                f"a CUDA device this machine has ({count} visible; torch {torch.__version__} "
                f"built {'with' if torch.backends.cuda.is_built() else 'without'} CUDA), or auto / cpu",
            )
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(key, name, "a device this machine has: MPS is not available here; auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(key, name, "auto, cpu, cuda, cuda:N or mps")
    return device


@dataclass
class RuntimeConfig(Config):
    """The run-level ``runtime`` block: ``device``, ``precision`` and the ``loader`` settings.
    Training stages may override ``device`` / ``precision`` in their own block."""

    device: str = "auto"
    precision: str = "fp32"
    loader: LoaderConfig | dict[str, Any] = field(default_factory=LoaderConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.device, str):
            raise ConfigError("device", self.device, "auto, cpu, cuda, cuda:N or mps")
        check_choice("precision", self.precision, list(PRECISIONS))
        self.loader = nested(LoaderConfig, self.loader, "loader")

    def resolve(
        self, device: str | None = None, precision: str | None = None, key: str = "runtime"
    ) -> Runtime:
        """This run's :class:`Runtime`, with a stage's ``device`` / ``precision`` if it sets them."""
        chosen = device or self.device
        where = key if device else "runtime"
        resolved = (
            distributed.device()
            if distributed.world_size() > 1
            else resolve_device(chosen, f"{where}.device")
        )
        prec = precision or self.precision
        check_choice(f"{key if precision else 'runtime'}.precision", prec, list(PRECISIONS))
        assert isinstance(self.loader, LoaderConfig)
        return Runtime(resolved, prec, self.loader)


@dataclass(frozen=True)
class Runtime:
    """A resolved device, precision and loader configuration."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    loader: LoaderConfig = field(default_factory=LoaderConfig)

    @property
    def dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]

    def autocast(self) -> Any:
        """``torch.autocast`` in the configured precision (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16 (bf16 has fp32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None


CPU = Runtime()


def placement(model: nn.Module, device: torch.device) -> torch.device:
    """``device``, or the CPU for a model with int8 kernels (torch.ao modules, PT2E graphs)."""
    if device.type == "cpu":
        return device
    from shrinkflow.core.qgraph import is_int8_graph

    if is_int8_graph(model):
        return torch.device("cpu")
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_quantized:
            return torch.device("cpu")
    for module in model.modules():
        if type(module).__module__.startswith("torch.ao.nn.quantized"):
            return torch.device("cpu")
    return device


@contextlib.contextmanager
def on_device(*models: nn.Module | None, device: torch.device) -> Iterator[None]:
    """Move ``models`` to ``device`` for the block and back to the CPU after it, failed or not."""
    moved = [m for m in models if m is not None]
    try:
        for m in moved:
            m.to(device)
        yield
    finally:
        for m in moved:
            m.to("cpu")
