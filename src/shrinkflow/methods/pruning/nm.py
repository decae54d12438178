"""N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks";
NVIDIA Ampere sparse tensor cores, 2:4): in every group of ``m`` consecutive weights along the input
dimension, keep the ``n`` of largest magnitude.

Groups run along the input features of a Linear layer and, as in NVIDIA's ASP, along the input
channels of a convolution (for each output channel and kernel position). The mask is computed here
by hand: torch has no N:M mask for CPU tensors (``to_sparse_semi_structured`` is CUDA-only and 2:4
only) and torchao removed its sparsity module; the cut itself, fine-tuning with the mask attached and
making it permanent use torch's ``torch.nn.utils.prune.custom_from_mask``.

A layer whose input dimension is not a multiple of ``m`` cannot hold the pattern and is left dense,
with a logged warning; the artifact's recipe step records each layer's pattern (``structure``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.sparsity import prunable
from shrinkflow.methods._select import check_names, select_layers
from shrinkflow.methods.pruning._unstructured import finetune_and_remove

__all__ = ["NMConfig", "nm_mask", "nm_patterns", "nm_prune", "plugin"]

log = logging.getLogger(__name__)

GROUP_SIZES = (2, 4, 8, 16, 32)


@dataclass
class NMConfig(Config):
    """Keep ``n`` of every ``m`` consecutive input weights (2:4 is the Ampere pattern; 1:2, 4:8 and
    1:4, 2:8, 1:16 are the other patterns studied); ``exclude``: layers kept dense."""

    n: int = 2
    m: int = 4
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("m", self.m, list(GROUP_SIZES))
        check_range("n", self.n, 1, self.m - 1, integer=True)
        check_names("exclude", self.exclude)


def _grouped(weight: torch.Tensor, m: int) -> torch.Tensor:
    """(..., groups, m) view with the input dimension (dim 1) last, split into groups of ``m``."""
    return weight.movedim(1, -1).reshape(*weight.movedim(1, -1).shape[:-1], -1, m)


def nm_mask(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Boolean mask keeping the ``n`` largest |w| in every group of ``m`` along dim 1 (input)."""
    groups = _grouped(weight.detach().abs(), m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    moved = weight.movedim(1, -1).shape
    return keep.reshape(moved).movedim(-1, 1).contiguous()


def _pattern(weight: torch.Tensor) -> str:
    """The tightest ``n:m`` pattern (smallest n/m, then smallest m; m from GROUP_SIZES) the weight's
    non-zeros satisfy, else ``dense`` (no zero) or ``unstructured``."""
    nonzero = weight.detach() != 0
    if bool(nonzero.all()):
        return "dense"
    found = [
        (most / m, m, most)
        for m in GROUP_SIZES
        if weight.shape[1] % m == 0 and (most := int(_grouped(nonzero, m).sum(-1).max())) < m
    ]
    if not found:
        return "unstructured"
    _, m, most = min(found)
    return f"{most}:{m}"


def nm_patterns(model: nn.Module) -> dict[str, Any]:
    """Recipe record: each prunable layer's pattern and the size of its grouped (input) dimension."""
    return {
        "layers": {
            name: {"pattern": _pattern(m.weight), "input_dim": int(m.weight.shape[1])}
            for name, m in prunable(model)
        }
    }


def nm_prune(model: nn.Module, cfg: NMConfig, ctx: Context) -> nn.Module:
    layers = []
    for name, module in select_layers(model, cfg.exclude):
        if module.weight.shape[1] % cfg.m:
            log.warning(
                "nm: layer %r left dense: its input dimension %d is not a multiple of m=%d",
                name,
                module.weight.shape[1],
                cfg.m,
            )
            continue
        prune.custom_from_mask(module, "weight", nm_mask(module.weight, cfg.n, cfg.m))
        layers.append((name, module))
    if not layers:
        log.warning("nm: no layer has an input dimension divisible by m=%d; the model is unchanged", cfg.m)
        return model
    return finetune_and_remove(model, layers, ctx, f"nm {cfg.n}:{cfg.m} finetune")


plugin = Method(
    NMConfig,
    nm_prune,
    summary="N:M semi-structured sparsity (keep n largest of every m inputs) + fine-tuning",
    structure=nm_patterns,
)
