"""Unstructured magnitude pruning (Han et al. 2015): zero the smallest |w|, then fine-tune.

Uses torch's own ``torch.nn.utils.prune`` (L1 criterion), globally across layers or per layer.
Masks stay attached during fine-tuning so pruned weights remain zero; then they are made permanent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.sparsity import prunable


@dataclass
class MagnitudeConfig(Config):
    """``sparsity``: fraction of weights removed; ``scope``: one global threshold or one per layer;
    ``exclude``: module names left dense (e.g. the classifier)."""

    sparsity: float = 0.5
    scope: str = "global"
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_choice("scope", self.scope, ["global", "layer"])
        if not isinstance(self.exclude, list) or not all(isinstance(n, str) for n in self.exclude):
            raise ConfigError("exclude", self.exclude, "a list of module names")


def magnitude_prune(model: nn.Module, cfg: MagnitudeConfig, ctx: Context) -> nn.Module:
    layers = [(name, m) for name, m in prunable(model) if name not in cfg.exclude]
    unknown = sorted(set(cfg.exclude) - {name for name, _ in prunable(model)})
    if unknown:
        raise ConfigError("exclude", unknown, f"names of prunable layers {[n for n, _ in prunable(model)]}")
    if not layers:
        raise ConfigError("exclude", cfg.exclude, "to leave at least one prunable layer")
    if cfg.scope == "global":
        prune.global_unstructured(
            [(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=cfg.sparsity
        )
    else:
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=cfg.sparsity)
    ctx.train_model(model, label="prune finetune")
    for _, m in layers:
        prune.remove(m, "weight")
    return model


plugin = Method(MagnitudeConfig, magnitude_prune, summary="unstructured L1 magnitude pruning + fine-tuning")
