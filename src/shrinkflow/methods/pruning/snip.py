"""SNIP: single-shot network pruning by connection sensitivity (Lee et al. 2019, ICLR).

SNIP prunes *before* training: at initialization, the sensitivity of each connection is
``|dL/dw * w|`` (equivalently ``|dL/dc|`` for a multiplicative gate c = 1 on the weight), computed on
one mini-batch (or the gradient averaged over a few: ``batches``), normalized and ranked over all
layers at once; the lowest ``sparsity`` fraction is removed and the sparse network is then trained.

``reinit: true`` (the paper's setting) first re-initializes every module's parameters with its own
``reset_parameters`` from torch's current RNG (torch's default initializers, not the paper's
variance scaling), so the incoming trained weights are discarded and the run is pruning at init
followed by training from scratch with the stage's ``finetune`` settings (give it enough epochs).
``reinit: false`` scores the weights as given (SNIP as a post-training criterion).
Masks come from torch's ``torch.nn.utils.prune`` (``importance_scores``), stay attached while the
network trains, then become permanent. The normalization by the sum of sensitivities does not
change a global ranking, so it is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import check_names, select_layers
from shrinkflow.methods.pruning._unstructured import (
    check_batches,
    finetune_and_remove,
    prune_layers,
    weight_gradients,
)

__all__ = ["SnipConfig", "plugin", "reinitialize", "snip_prune", "snip_scores"]


@dataclass
class SnipConfig(Config):
    """``sparsity``: fraction of weights removed, ranked over all selected layers at once;
    ``reinit``: re-initialize before scoring (prune at init) or score the given weights;
    ``batches`` mini-batches of ``batch_size`` samples give the gradient; ``exclude``: layers kept dense."""

    sparsity: float = 0.5
    reinit: bool = True
    batches: int = 1
    batch_size: int = 128
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        if not isinstance(self.reinit, bool):
            raise ConfigError("reinit", self.reinit, "true or false")
        check_batches(self.batches, self.batch_size)
        check_names("exclude", self.exclude)


def reinitialize(model: nn.Module) -> nn.Module:
    """Draw fresh initial values for every module that defines ``reset_parameters``."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return model


def snip_scores(
    model: nn.Module, layers: list[tuple[str, nn.Module]], cfg: SnipConfig, ctx: Context
) -> list[torch.Tensor]:
    """|w * g| with g the gradient summed over the scoring batches, one tensor per layer."""
    totals = [torch.zeros_like(m.weight) for _, m in layers]
    for grads in weight_gradients(model, layers, ctx.train, cfg.batches, cfg.batch_size, ctx.runtime.device):
        for total, g in zip(totals, grads, strict=True):
            total += g
    return [(m.weight.detach() * total).abs() for (_, m), total in zip(layers, totals, strict=True)]


def snip_prune(model: nn.Module, cfg: SnipConfig, ctx: Context) -> nn.Module:
    layers = select_layers(model, cfg.exclude)
    if cfg.reinit:
        reinitialize(model)
    scores = snip_scores(model, layers, cfg, ctx)
    prune_layers(layers, cfg.sparsity, "global", prune.L1Unstructured, scores)
    return finetune_and_remove(model, layers, ctx, "snip train")


plugin = Method(SnipConfig, snip_prune, summary="SNIP connection-sensitivity pruning at init + training")
