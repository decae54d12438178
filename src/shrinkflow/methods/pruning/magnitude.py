"""Unstructured magnitude pruning (Han et al. 2015): zero the smallest |w|, then fine-tune.

Uses torch's own ``torch.nn.utils.prune`` (L1 criterion), globally across layers or per layer.
Masks stay attached during fine-tuning so pruned weights remain zero; then they are made permanent.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import select_layers
from shrinkflow.methods.pruning._unstructured import UnstructuredConfig, finetune_and_remove, prune_layers


@dataclass
class MagnitudeConfig(UnstructuredConfig):
    """``sparsity``: fraction of weights removed; ``scope``: one global threshold or one per layer;
    ``exclude``: module names left dense (e.g. the classifier)."""


def magnitude_prune(model: nn.Module, cfg: MagnitudeConfig, ctx: Context) -> nn.Module:
    layers = select_layers(model, cfg.exclude)
    prune_layers(layers, cfg.sparsity, cfg.scope, prune.L1Unstructured)
    return finetune_and_remove(model, layers, ctx, "prune finetune")


plugin = Method(MagnitudeConfig, magnitude_prune, summary="unstructured L1 magnitude pruning + fine-tuning")
