"""What a compression method plugin is: a self-validating config class plus the function applying it.

Pruners, quantizers and distillers all share this shape. ``apply`` does the work (it may train, through
``ctx.fit``); ``restore`` re-creates only the *structure* an applied method leaves behind (quantized
module types, removed channels, factorized layers) on a freshly built model, so an artifact's
state_dict can be loaded into it in a new process. Methods that change values only (unstructured
pruning, distillation, weight sharing) keep the identity ``restore``.

When the structure depends on the data (channels chosen by importance, ranks chosen by an energy
target), the method also gives ``structure(model) -> dict``: a plain record (names, ints, lists)
stored with the recipe step and handed back to ``restore`` as its third argument.

A method that cannot apply to every model gives ``check(model, config, input_shape)``: it raises
ConfigError naming the method, the construct and what to use instead, and runs on the freshly
built model before any node trains (the pipeline's preflight), not after minutes of training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkflow.core.config import Config
from shrinkflow.core.data import Split
from shrinkflow.core.runtime import CPU, Runtime
from shrinkflow.core.training import EpochLog, LossFn, TrainConfig

__all__ = ["Context", "Method"]


@dataclass
class Context:
    """What a method may use besides the model: data, a trainer bound to the stage's training
    configuration (``train_cfg``) and runtime (device, precision: ``runtime``), and the teacher.
    Methods get the model on the CPU; ``train_model`` trains it on the runtime's device (the
    teacher with it) and hands it back on the CPU."""

    train: Split
    val: Split
    fit: Callable[..., list[EpochLog]]
    teacher: nn.Module | None = None
    history: list[EpochLog] = field(default_factory=list)
    train_cfg: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=0))
    runtime: Runtime = CPU

    def train_model(
        self,
        model: nn.Module,
        loss_fn: LossFn | None = None,
        label: str = "train",
        cfg: TrainConfig | None = None,
    ) -> None:
        """Train ``model`` with the stage's training config (or ``cfg``, e.g. a per-step share of it
        in a gradual schedule) and record its history."""
        extra = {} if cfg is None else {"cfg": cfg}
        self.history += self.fit(model, loss_fn=loss_fn, label=label, companions=(self.teacher,), **extra)

    def probe(self, n: int = 2) -> torch.Tensor:
        """The first ``n`` training inputs without augmentation (tracing, shape probes)."""
        return self.train.for_eval().head(n)


def _identity(model: nn.Module, config: Any, structure: dict[str, Any] | None = None) -> nn.Module:
    return model


@dataclass(frozen=True)
class Method:
    """A compression method plugin (the object an entry point names)."""

    config_cls: type[Config]
    apply: Callable[[nn.Module, Any, Context], nn.Module]
    restore: Callable[[nn.Module, Any, dict[str, Any] | None], nn.Module] = _identity
    summary: str = ""
    structure: Callable[[nn.Module], dict[str, Any]] | None = None
    check: Callable[[nn.Module, Any, tuple[int, ...]], None] | None = None

    def config(self, options: dict[str, Any] | None, key: str = "") -> Config:
        return self.config_cls.from_dict(options or {}, key=key)
