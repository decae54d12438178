"""Shared parts of the unstructured pruners (magnitude, random, taylor, snip).

They differ only in the score that ranks weights. Selecting layers, cutting with
``torch.nn.utils.prune`` (globally or per layer), fine-tuning with the masks attached and making the
masks permanent are the same, and live here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, check_choice, check_range
from shrinkflow.core.data import Split
from shrinkflow.core.method import Context
from shrinkflow.methods._select import check_names

__all__ = ["UnstructuredConfig", "check_batches", "finetune_and_remove", "prune_layers", "weight_gradients"]

Layers = Sequence[tuple[str, nn.Module]]


@dataclass
class UnstructuredConfig(Config):
    """``sparsity``: fraction of weights removed; ``scope``: one global threshold or one per layer;
    ``exclude``: module names left dense (e.g. the classifier)."""

    sparsity: float = 0.5
    scope: str = "global"
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_choice("scope", self.scope, ["global", "layer"])
        check_names("exclude", self.exclude)


def check_batches(batches: int, batch_size: int) -> None:
    """Config check for the mini-batches a gradient score is computed on."""
    check_range("batches", batches, 1, 100_000, integer=True)
    check_range("batch_size", batch_size, 1, 1_000_000, integer=True)


def prune_layers(
    layers: Layers,
    sparsity: float,
    scope: str,
    method: type[prune.BasePruningMethod] = prune.L1Unstructured,
    scores: Sequence[torch.Tensor] | None = None,
) -> None:
    """Attach masks removing ``sparsity`` of the weights, ranked by ``method`` (on ``scores`` if given:
    the lowest go) over all ``layers`` at once (``global``) or within each layer (``layer``)."""
    if scope == "global":
        importance = (
            None if scores is None else {(m, "weight"): s for (_, m), s in zip(layers, scores, strict=True)}
        )
        prune.global_unstructured(
            [(m, "weight") for _, m in layers],
            pruning_method=method,
            importance_scores=importance,
            amount=sparsity,
        )
        return
    for i, (_, m) in enumerate(layers):
        if scores is None:
            method.apply(m, "weight", amount=sparsity)
        else:
            method.apply(m, "weight", amount=sparsity, importance_scores=scores[i])


def finetune_and_remove(model: nn.Module, layers: Layers, ctx: Context, label: str) -> nn.Module:
    """Train with the masks attached (pruned weights stay zero), then make the masks permanent."""
    ctx.train_model(model, label=label)
    for _, m in layers:
        prune.remove(m, "weight")
    return model


def weight_gradients(
    model: nn.Module,
    layers: Layers,
    data: Split,
    batches: int,
    batch_size: int,
    device: torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield dL/dW (cross-entropy) of each layer's weight, for ``batches`` shuffled mini-batches.

    Batches are drawn from torch's global RNG (seeded runs see the same ones), cycling through the data
    when more samples are asked for than it holds; ``batch_size`` is capped at the data size. The model
    runs in eval mode (dropout off, batch-norm statistics untouched) and ``.grad`` fields are not
    touched: scoring changes nothing in the model. Computed on ``device`` (the stage's; the model
    is back on the CPU after) without augmentation; gradients are yielded on the CPU.
    """
    device = device or torch.device("cpu")
    data = data.for_eval()
    n = len(data)
    size = min(batch_size, n)
    order = torch.cat([torch.randperm(n) for _ in range(-(-batches * size // n))])
    weights = [m.weight for _, m in layers]
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        for b in range(batches):
            x, y = data.take(order[b * size : (b + 1) * size])
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            yield tuple(g.cpu() for g in torch.autograd.grad(loss, weights))
    finally:
        model.to("cpu").train(was_training)
