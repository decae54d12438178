"""Dynamic int8 quantization: int8 weights, activations quantized on the fly per batch.

Backed by ``torch.ao.quantization.quantize_dynamic``, which still runs in torch 2.13 (deprecated in
favour of torchao). On this CPU it measured faster than torchao's eager int8 path (2.2x vs 1.7x over
fp32 at batch 256, see STACK_NOTES), so it stays the backend behind this plugin until torchao wins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_choice
from shrinkflow.core.method import Context, Method

_MODULES = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU}


@dataclass
class DynamicInt8Config(Config):
    """``engine``: the quantized kernel library; ``modules``: which module types to quantize."""

    engine: str = "x86"
    modules: tuple[str, ...] | list[str] = ("Linear",)

    def __post_init__(self) -> None:
        check_choice(
            "engine", self.engine, [e for e in torch.backends.quantized.supported_engines if e != "none"]
        )
        if not self.modules or not all(m in _MODULES for m in self.modules):
            raise ConfigError("modules", self.modules, f"a non-empty list drawn from {sorted(_MODULES)}")
        self.modules = list(self.modules)


def _quantize(model: nn.Module, cfg: DynamicInt8Config) -> nn.Module:
    torch.backends.quantized.engine = cfg.engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            model.eval(), {_MODULES[m] for m in cfg.modules}, dtype=torch.qint8
        )


def dynamic_int8(model: nn.Module, cfg: DynamicInt8Config, ctx: Context) -> nn.Module:
    return _quantize(model, cfg)


def restore(model: nn.Module, cfg: DynamicInt8Config, structure: dict | None = None) -> nn.Module:
    return _quantize(model, cfg)


plugin = Method(DynamicInt8Config, dynamic_int8, restore, summary="int8 weights, dynamic int8 activations")
