"""What a compression method plugin is: a self-validating config class plus the function applying it.

Pruners, quantizers and distillers all share this shape. ``apply`` does the work (it may train, through
``ctx.fit``); ``restore`` re-creates only the *structure* an applied method leaves behind (quantized
module types, removed channels) on a freshly built model, so an artifact's state_dict can be loaded
into it in a new process. Methods that change values only (unstructured pruning, distillation) keep
the identity ``restore``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shrinkflow.core.config import Config
from shrinkflow.core.data import Split
from shrinkflow.core.training import EpochLog, LossFn

__all__ = ["Context", "Method"]


@dataclass
class Context:
    """What a method may use besides the model: data, a trainer bound to the stage's training
    configuration, and the teacher."""

    train: Split
    val: Split
    fit: Callable[..., list[EpochLog]]
    teacher: nn.Module | None = None
    history: list[EpochLog] = field(default_factory=list)

    def train_model(self, model: nn.Module, loss_fn: LossFn | None = None, label: str = "train") -> None:
        """Train ``model`` with the stage's training config and record its history."""
        self.history += self.fit(model, loss_fn=loss_fn, label=label)


def _identity(model: nn.Module, config: Any) -> nn.Module:
    return model


@dataclass(frozen=True)
class Method:
    """A compression method plugin (the object an entry point names)."""

    config_cls: type[Config]
    apply: Callable[[nn.Module, Any, Context], nn.Module]
    restore: Callable[[nn.Module, Any], nn.Module] = _identity
    summary: str = ""

    def config(self, options: dict[str, Any] | None, key: str = "") -> Config:
        return self.config_cls.from_dict(options or {}, key=key)
