"""Half-precision weights: float16 (IEEE binary16) or bfloat16 (Kalamkar et al. 2019, "A Study of
BFLOAT16 for Deep Learning Training"), halving the artifact against float32.

Every floating-point parameter and buffer is stored in ``dtype`` (integer buffers untouched). What
runs depends on ``compute``:

- ``float32`` (default): weight-only half precision. Each forward pass upcasts the stored tensors to
  float32 (``torch.func.functional_call``) and computes in float32, so every op works on any CPU and
  the outputs are exactly those of the float32 model with its weights rounded to ``dtype``. This
  saves storage, not compute: on this 2-core CPU (1 thread, batch 256) it ran about 1.1-1.3x slower
  than float32 (the upcast), and at batch 1 the per-call overhead dominates (MLP-256-256 on digits:
  0.19 vs 0.05 ms); native half compute ran about 10x slower at batch 256 (no fp16/bf16 matmul
  units used; torch falls back to slow kernels).
- ``native``: activations are cast to ``dtype`` too and the model computes in it (for CPUs with
  AVX512-FP16/AMX or GPUs); the logits are cast back to float32.

Either way the model is wrapped in :class:`HalfPrecision` (inputs and outputs float32), which
``restore`` re-creates on a fresh model so the half-precision state_dict loads into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from shrinkflow.core.config import Config, check_choice
from shrinkflow.core.method import Context, Method

__all__ = ["HalfConfig", "HalfPrecision", "half", "plugin", "restore"]

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class HalfConfig(Config):
    """``dtype``: ``float16`` (10-bit mantissa, range to 65504) or ``bfloat16`` (8-bit exponent like
    float32, 7-bit mantissa); ``compute``: ``float32`` (weights upcast per forward) or ``native``."""

    dtype: str = "float16"
    compute: str = "float32"

    def __post_init__(self) -> None:
        check_choice("dtype", self.dtype, list(DTYPES))
        check_choice("compute", self.compute, ["float32", "native"])


class HalfPrecision(nn.Module):
    """Holds ``inner`` with half-precision tensors; takes and returns float32."""

    def __init__(self, inner: nn.Module, dtype: str, compute: str) -> None:
        super().__init__()
        self.dtype, self.compute = DTYPES[dtype], compute
        self.inner = inner.to(self.dtype)  # Module.to(dtype) casts floating-point tensors only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compute == "native":
            return self.inner(x.to(self.dtype)).float()
        tensors = {
            name: t.float() if t.is_floating_point() else t
            for name, t in [*self.inner.named_parameters(), *self.inner.named_buffers()]
        }
        return functional_call(self.inner, tensors, (x,))


def _wrap(model: nn.Module, cfg: HalfConfig) -> nn.Module:
    return HalfPrecision(model, cfg.dtype, cfg.compute).eval()


def half(model: nn.Module, cfg: HalfConfig, ctx: Context) -> nn.Module:
    return _wrap(model, cfg)


def restore(model: nn.Module, cfg: HalfConfig, structure: dict[str, Any] | None = None) -> nn.Module:
    return _wrap(model, cfg)


plugin = Method(HalfConfig, half, restore, summary="float16/bfloat16 weights (half-size artifact)")
