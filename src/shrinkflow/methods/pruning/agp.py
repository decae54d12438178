"""Gradual magnitude pruning on Zhu & Gupta's cubic schedule (AGP, "To prune, or not to prune", 2017).

Sparsity rises from ``initial_sparsity`` to ``sparsity`` over ``steps`` pruning steps,

    s_t = s_f + (s_i - s_f) * (1 - t / steps) ** 3,    t = 1 .. steps,

pruning fast while the network has many redundant weights and slowly as it gets thin. Each step
re-ranks the surviving weights by magnitude (one global threshold or one per layer), masks the
smallest with ``torch.nn.utils.prune`` and fine-tunes for ``epochs_per_step`` with the stage's
training config; then the stage's full fine-tuning runs once more with the final masks. This is
also Han et al.'s iterative pruning (Deep Compression, step 1) with a principled schedule.

With ``kd_alpha > 0`` the fine-tuning learns from the soft targets of the dense model as it was
before pruning (a frozen copy), mixed with the labels: pruning with self-distillation, as in
Sanh et al.'s movement pruning (2020) and Hinton et al.'s soft targets.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import check_names, select_layers
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, soft_target_loss

__all__ = ["AGPConfig", "agp_prune", "cubic_schedule", "plugin"]


@dataclass
class AGPConfig(Config):
    """``sparsity``: final fraction of weights removed; ``initial_sparsity``: the schedule's start;
    ``steps``: pruning steps; ``epochs_per_step``: fine-tuning between steps; ``scope``: one global
    threshold or one per layer; ``layer_sparsity``: per-layer final targets overriding ``sparsity``
    (implies per-layer thresholds for those layers); ``exclude``: layers left dense;
    ``kd_alpha``/``temperature``: weight and temperature of the dense model's soft targets during
    fine-tuning (0: plain cross-entropy)."""

    sparsity: float = 0.9
    initial_sparsity: float = 0.0
    steps: int = 4
    epochs_per_step: int = 1
    scope: str = "global"
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    exclude: list[str] = field(default_factory=list)
    kd_alpha: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_open=True)
        check_range("initial_sparsity", self.initial_sparsity, 0.0, self.sparsity)
        check_range("steps", self.steps, 1, 1000, integer=True)
        check_range("epochs_per_step", self.epochs_per_step, 0, 1000, integer=True)
        check_choice("scope", self.scope, ["global", "layer"])
        if not isinstance(self.layer_sparsity, dict):
            raise ConfigError("layer_sparsity", self.layer_sparsity, "a mapping {layer name: sparsity}")
        for name, value in self.layer_sparsity.items():
            check_range(f"layer_sparsity.{name}", value, 0.0, 1.0, high_open=True)
        check_names("exclude", self.exclude)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)


def cubic_schedule(initial: float, final: float, steps: int) -> list[float]:
    """Target sparsity after each of ``steps`` pruning steps (the last one is ``final``)."""
    return [final + (initial - final) * (1.0 - t / steps) ** 3 for t in range(1, steps + 1)]


def _masks(weights: dict[str, torch.Tensor], amount: float, scope: str) -> dict[str, torch.Tensor]:
    """Keep-masks removing the ``amount`` fraction of smallest |w| (zeros count as removed first)."""
    if scope == "layer":
        return {name: _masks({name: w}, amount, "global")[name] for name, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    k = round(amount * flat.numel())
    if k == 0:
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    # Rank, not threshold: ties at the threshold would otherwise overshoot the target.
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.topk(flat, k, largest=False).indices] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def agp_prune(model: nn.Module, cfg: AGPConfig, ctx: Context) -> nn.Module:
    select_layers(model, list(cfg.layer_sparsity), key="layer_sparsity", require=False)  # names must exist
    layers = dict(select_layers(model, cfg.exclude))
    shared = [n for n in layers if n not in cfg.layer_sparsity]
    step_cfg = dataclasses.replace(ctx.train_cfg, epochs=cfg.epochs_per_step)
    schedules = {
        n: cubic_schedule(cfg.initial_sparsity * s / cfg.sparsity if cfg.sparsity else 0.0, s, cfg.steps)
        for n, s in cfg.layer_sparsity.items()
    }
    shared_schedule = cubic_schedule(cfg.initial_sparsity, cfg.sparsity, cfg.steps)
    loss_fn = None
    if cfg.kd_alpha > 0:
        dense = copy.deepcopy(model).eval().requires_grad_(False)
        loss_fn = soft_target_loss(dense, SoftKDConfig(temperature=cfg.temperature, alpha=cfg.kd_alpha))
    for step in range(cfg.steps):
        masks: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if shared:
                current = {n: layers[n].weight.detach() for n in shared}
                masks.update(_masks(current, shared_schedule[step], cfg.scope))
            for n, schedule in schedules.items():
                masks.update(_masks({n: layers[n].weight.detach()}, schedule[step], "layer"))
        for n, mask in masks.items():
            if prune.is_pruned(layers[n]):
                prune.remove(layers[n], "weight")  # bake the previous step's zeros, then re-mask
            prune.custom_from_mask(layers[n], "weight", mask)
        if cfg.epochs_per_step and step < cfg.steps - 1:
            ctx.train_model(model, loss_fn, label=f"agp step {step + 1}/{cfg.steps}", cfg=step_cfg)
    ctx.train_model(model, loss_fn, label="agp finetune")
    for module in layers.values():
        prune.remove(module, "weight")
    return model


plugin = Method(AGPConfig, agp_prune, summary="gradual magnitude pruning, cubic schedule (Zhu & Gupta)")
