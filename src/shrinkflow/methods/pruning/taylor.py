"""First-order Taylor importance pruning (Molchanov et al. 2017, ICLR; 2019, CVPR).

The loss change from removing weight w is approximated to first order by ``|w * dL/dw|``. The score
is accumulated over ``batches`` shuffled mini-batches of the training set (the absolute value is
taken per batch, as Molchanov et al. accumulate per-batch contributions, so gradients of opposite
sign do not cancel). The lowest-scoring fraction is removed with torch's own
``torch.nn.utils.prune`` (``importance_scores``), globally or per layer; masks stay attached while
fine-tuning, then become permanent. Here the criterion ranks single weights (unstructured), the
weight-level form of the 2019 paper, not the filter-level form.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import select_layers
from shrinkflow.methods.pruning._unstructured import (
    UnstructuredConfig,
    check_batches,
    finetune_and_remove,
    prune_layers,
    weight_gradients,
)

__all__ = ["TaylorConfig", "plugin", "taylor_prune", "taylor_scores"]


@dataclass
class TaylorConfig(UnstructuredConfig):
    """``sparsity``, ``scope``, ``exclude`` as for magnitude pruning; ``batches`` mini-batches of
    ``batch_size`` training samples accumulate the score."""

    batches: int = 10
    batch_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        check_batches(self.batches, self.batch_size)


def taylor_scores(
    model: nn.Module, layers: list[tuple[str, nn.Module]], cfg: TaylorConfig, ctx: Context
) -> list[torch.Tensor]:
    """sum over batches of |w * dL/dw|, one tensor per layer (weights' shapes)."""
    weights = [m.weight.detach() for _, m in layers]
    scores = [torch.zeros_like(w) for w in weights]
    for grads in weight_gradients(model, layers, ctx.train, cfg.batches, cfg.batch_size, ctx.runtime.device):
        for score, w, g in zip(scores, weights, grads, strict=True):
            score += (w * g).abs()
    return scores


def taylor_prune(model: nn.Module, cfg: TaylorConfig, ctx: Context) -> nn.Module:
    layers = select_layers(model, cfg.exclude)
    scores = taylor_scores(model, layers, cfg, ctx)
    prune_layers(layers, cfg.sparsity, cfg.scope, prune.L1Unstructured, scores)
    return finetune_and_remove(model, layers, ctx, "taylor-prune finetune")


plugin = Method(TaylorConfig, taylor_prune, summary="first-order Taylor |w*grad| pruning + fine-tuning")
