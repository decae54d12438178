"""Random unstructured pruning, registered from outside shrinkflow.

It uses only shrinkflow's public plugin shape (a self-validating config + an apply function
wrapped in ``Method``) and torch's own pruning utilities.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.sparsity import prunable


@dataclass
class RandomConfig(Config):
    sparsity: float = 0.5

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)


def random_prune(model: nn.Module, cfg: RandomConfig, ctx: Context) -> nn.Module:
    layers = [m for _, m in prunable(model)]
    prune.global_unstructured([(m, "weight") for m in layers], prune.RandomUnstructured, amount=cfg.sparsity)
    ctx.train_model(model, label="random-prune finetune")
    for m in layers:
        prune.remove(m, "weight")
    return model


plugin = Method(RandomConfig, random_prune, summary="random unstructured pruning (baseline)")
