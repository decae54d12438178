"""Binary weights with a per-output-channel scale: BWN, the weight half of XNOR-Net (Rastegari et al.
2016, "XNOR-Net: ImageNet Classification Using Binary Convolutional Neural Networks").

Each selected layer's weight becomes ``W_b = alpha_c * sign(W)``, with ``alpha_c`` the mean ``|W|``
of output channel c, the scale minimizing ``||W_c - alpha_c sign(W_c)||``. Zeros of a sparse
(pruned) layer stay zero, and ``alpha_c`` is then the mean over the channel's non-zeros, the optimum
for that support. With ``finetune`` the full-precision *latent* weights are trained through the
binarization with the straight-through estimator (sign's gradient taken as identity, alpha
differentiable, as in XNOR-Net), using the stage's ``finetune`` training, then binarized for good.
Biases stay float. First and last layers are usually kept full precision (``skip_first_last``).

The result is a plain float model (identity ``restore``): every binarized weight row holds exactly
two values, +alpha_c and -alpha_c (plus 0 where pruned). It is stored as float32, so the artifact is
not smaller on disk; a 1-bit packed format would need a custom kernel to pay off on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from shrinkflow.core.config import Config, ConfigError
from shrinkflow.core.method import Context, Method
from shrinkflow.core.sparsity import prunable
from shrinkflow.methods._select import check_names, select_layers

__all__ = ["BinarizeConfig", "binarize", "binarize_weight", "binarized_layers", "plugin"]

log = logging.getLogger(__name__)


@dataclass
class BinarizeConfig(Config):
    """``finetune``: train latent weights through the binarization (straight-through estimator) with
    the stage's ``finetune`` settings; ``skip_first_last``: keep the first and last prunable layers in
    float; ``exclude``: more layers kept in float."""

    finetune: bool = True
    skip_first_last: bool = True
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("finetune", "skip_first_last"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")
        check_names("exclude", self.exclude)


def _scale(weight: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """alpha_c: mean |w| over each output channel's kept (non-zero) entries, broadcastable to w."""
    dims = tuple(range(1, weight.ndim))
    count = mask.sum(dims, keepdim=True).clamp_min(1)
    return (weight * mask).abs().sum(dims, keepdim=True) / count


def binarize_weight(weight: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """alpha_c * sign(w) on the kept entries, 0 elsewhere (exact: two values per output channel)."""
    mask = weight != 0 if mask is None else mask
    return _scale(weight, mask) * torch.sign(weight) * mask


class _BinarizeSTE(nn.Module):
    """Parametrization: forward value alpha_c * sign(w); gradient through sign taken as identity."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        kept = latent * self.mask
        sign = kept + (torch.sign(kept) - kept).detach()
        return _scale(latent, self.mask) * sign


def _stored(module: nn.Module) -> str:
    """Where the weight's values live: ``weight_orig`` while ``torch.nn.utils.prune`` holds a mask on
    it (a stage freezing a pruned model's zeros), else ``weight``."""
    return "weight_orig" if hasattr(module, "weight_orig") else "weight"


def _targets(model: nn.Module, cfg: BinarizeConfig) -> list[tuple[str, nn.Module]]:
    layers = select_layers(model, cfg.exclude, require=False)
    names = [name for name, _ in prunable(model)]
    if cfg.skip_first_last:
        layers = [(name, m) for name, m in layers if name not in (names[0], names[-1])]
    return layers


def binarize(model: nn.Module, cfg: BinarizeConfig, ctx: Context) -> nn.Module:
    layers = _targets(model, cfg)
    if not layers:
        log.warning(
            "binarize: no layer left to binarize (exclude=%s, skip_first_last=%s)",
            cfg.exclude,
            cfg.skip_first_last,
        )
        return model
    chosen = {name for name, _ in layers}
    stored = [_stored(m) for _, m in layers]
    masks = [m.weight.detach() != 0 for _, m in layers]
    if cfg.finetune:
        # zeros of the layers left in float must survive the training too (a pruned model comes in)
        float_sparse = [
            m
            for name, m in prunable(model)
            if name not in chosen and _stored(m) == "weight" and not bool((m.weight != 0).all())
        ]
        for m in float_sparse:
            prune.custom_from_mask(m, "weight", m.weight.detach() != 0)
        for (_, m), name, mask in zip(layers, stored, masks, strict=True):
            parametrize.register_parametrization(m, name, _BinarizeSTE(mask))
        try:
            ctx.train_model(model, label="binarize finetune")
        finally:
            for (_, m), name in zip(layers, stored, strict=True):
                parametrize.remove_parametrizations(m, name, leave_parametrized=False)  # latent back
            for m in float_sparse:
                prune.remove(m, "weight")
    with torch.no_grad():
        for (_, m), name, mask in zip(layers, stored, masks, strict=True):
            getattr(m, name).copy_(binarize_weight(getattr(m, name), mask))
    return model


def binarized_layers(model: nn.Module) -> dict[str, Any]:
    """Recipe record: which layers hold binary weights (every row's non-zero |w| equal) and which float."""
    binary, full = [], []
    for name, m in prunable(model):
        w = m.weight.detach().flatten(1).abs()
        top = w.amax(1, keepdim=True)
        (binary if bool(((w == top) | (w == 0)).all()) else full).append(name)
    return {"binarized": binary, "full_precision": full}


plugin = Method(
    BinarizeConfig,
    binarize,
    summary="binary weights alpha_c*sign(W) per output channel (BWN) + STE fine-tuning",
    structure=binarized_layers,
)
