"""Sparsity bookkeeping shared by pruning, fine-tuning and distillation.

Pruned weights are stored as exact zeros. Any later training of a pruned model (fine-tuning,
distilling into the pruned student) must keep them zero; :func:`frozen_zeros` re-derives masks
from the zeros and holds them with torch's own ``torch.nn.utils.prune`` reparametrization.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.qgraph import graph_weights, is_int8_graph

__all__ = ["frozen_zeros", "module_tensor", "prunable", "weight_tensors"]

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer with a prunable ``weight``."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def weight_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(qualified name, float tensor) for every weight and bias, float or quantized modules alike.

    Quantized modules (``torch.ao`` dynamic/static) keep packed weights behind ``weight()``;
    they are dequantized here so counting is uniform. PT2E int8 graphs have no such modules: their
    Linear/Conv calls' weights are read from the graph, named after the module they came from.
    """
    if is_int8_graph(model):
        yield from graph_weights(model)  # type: ignore[arg-type]
        return
    for name, module in model.named_modules():
        for attr in ("weight", "bias"):
            value = module_tensor(module, attr)
            if value is not None:
                yield (f"{name}.{attr}" if name else attr), value


def module_tensor(module: nn.Module, attr: str = "weight") -> torch.Tensor | None:
    """``module.<attr>`` as a float tensor: read directly, or through the accessor method that
    ``torch.ao`` quantized modules have (``weight()``) and dequantized; None if there is none."""
    value = getattr(module, attr, None)
    if callable(value) and not isinstance(value, torch.Tensor):
        try:
            value = value()
        except (RuntimeError, TypeError):
            return None
    if not isinstance(value, torch.Tensor):
        return None
    return (value.dequantize() if value.is_quantized else value).detach()


@contextmanager
def frozen_zeros(model: nn.Module) -> Iterator[nn.Module]:
    """Keep exact-zero weights at zero while training inside this block."""
    masked = []
    for _, module in prunable(model):
        mask = module.weight.detach() != 0
        if not bool(mask.all()):
            prune.custom_from_mask(module, "weight", mask)
            masked.append(module)
    try:
        yield model
    finally:
        for module in masked:
            prune.remove(module, "weight")
