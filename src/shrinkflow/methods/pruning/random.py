"""Random unstructured pruning: the sanity baseline every pruning criterion must beat.

Blalock et al. 2020 ("What is the state of neural network pruning?", MLSys) ask every pruning paper
to report random pruning at the same sparsity; Han et al. 2015's magnitude criterion is compared
against it too. Weights to zero are drawn uniformly with torch's own ``torch.nn.utils.prune``
(``RandomUnstructured``, from torch's global RNG, so a seeded run is reproducible): over all
selected layers at once (``global``: each layer ends near the target, not exactly at it) or exactly
``sparsity`` of each layer (``layer``). Masks stay attached while fine-tuning, then become permanent.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import select_layers
from shrinkflow.methods.pruning._unstructured import UnstructuredConfig, finetune_and_remove, prune_layers

__all__ = ["RandomConfig", "plugin", "random_prune"]


@dataclass
class RandomConfig(UnstructuredConfig):
    """``sparsity``: fraction of weights removed (0 <= x < 1); ``scope``: ``global`` draws over all
    selected weights at once, ``layer`` removes exactly that fraction of each layer; ``exclude``:
    module names left dense."""


def random_prune(model: nn.Module, cfg: RandomConfig, ctx: Context) -> nn.Module:
    layers = select_layers(model, cfg.exclude)
    prune_layers(layers, cfg.sparsity, cfg.scope, prune.RandomUnstructured)
    return finetune_and_remove(model, layers, ctx, "random-prune finetune")


plugin = Method(RandomConfig, random_prune, summary="random unstructured pruning + fine-tuning (baseline)")
