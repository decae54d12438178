"""Weight sharing by k-means, the "trained quantization" of Deep Compression (Han et al., ICLR 2016).

Each layer's non-zero weights are clustered into at most ``2**bits`` centroids (1-D k-means,
scikit-learn, initialised linearly over [min, max] as the paper recommends: it keeps the rare large
weights that matter most). The weights are then tied to their centroid through a
``torch.nn.utils.parametrize`` parametrization ``W = codebook[assignment] * mask``; training the
model with the stage's fine-tuning config updates only the codebook, each centroid receiving the sum
of its weights' gradients, exactly the paper's centroid fine-tuning. Zeros (pruned weights) stay zero.

The result is a plain float model whose layers hold at most ``2**bits`` distinct non-zero values:
its artifact is as large as before, and the packed format (``shrinkflow.core.packing``) stores it as
codebook indices. No special modules are left behind, so ``restore`` is the identity.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods._select import check_names, select_layers
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, soft_target_loss

__all__ = ["SharedWeights", "WeightSharingConfig", "kmeans_codebook", "plugin", "share_weights"]

log = logging.getLogger(__name__)


@dataclass
class WeightSharingConfig(Config):
    """``bits``: codebook size 2**bits for Linear layers; ``conv_bits``: for convolutions (the paper
    used 8 for conv and 5 for fc layers); ``layer_bits``: per-layer overrides; ``init``: centroid
    initialisation (linear | density | random, Han et al. Fig. 4); ``exclude``: layers left as they are;
    ``kd_alpha``/``temperature``: centroid fine-tuning on the teacher's soft targets (0: plain CE,
    as in the paper)."""

    bits: int = 5
    conv_bits: int = 8
    layer_bits: dict[str, int] = field(default_factory=dict)
    init: str = "linear"
    exclude: list[str] = field(default_factory=list)
    kd_alpha: float = 0.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        check_range("bits", self.bits, 1, 16, integer=True)
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("conv_bits", self.conv_bits, 1, 16, integer=True)
        if not isinstance(self.layer_bits, dict):
            raise ConfigError("layer_bits", self.layer_bits, "a mapping {layer name: bits}")
        for name, value in self.layer_bits.items():
            check_range(f"layer_bits.{name}", value, 1, 16, integer=True)
        check_choice("init", self.init, ["linear", "density", "random"])
        check_names("exclude", self.exclude)

    def bits_for(self, name: str, module: nn.Module) -> int:
        if name in self.layer_bits:
            return self.layer_bits[name]
        return self.bits if isinstance(module, nn.Linear) else self.conv_bits


def kmeans_codebook(values: np.ndarray, k: int, init: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids, assignment) of 1-D ``values`` into at most ``k`` clusters."""
    from sklearn.cluster import KMeans  # imported here: only this method needs it

    distinct = np.unique(values)
    if len(distinct) <= k:  # already shared: each value is its own centroid
        return distinct.astype(np.float32), np.searchsorted(distinct, values)
    if init == "linear":
        start = np.linspace(values.min(), values.max(), k)
    elif init == "density":  # evenly spaced on the CDF
        start = np.quantile(values, np.linspace(0, 1, k))
    else:
        start = np.random.default_rng(seed).choice(values, k, replace=False)
    start = np.unique(start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when fewer distinct clusters emerge
        km = KMeans(len(start), init=start.reshape(-1, 1), n_init=1, max_iter=100, random_state=seed)
        labels = km.fit_predict(values.reshape(-1, 1).astype(np.float64))
    return km.cluster_centers_.ravel().astype(np.float32), labels


class SharedWeights(nn.Module):
    """Parametrization ``W = codebook[assignment] * mask``; ``codebook`` is the trainable part."""

    def __init__(self, codebook: torch.Tensor, assignment: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        self.codebook = nn.Parameter(codebook)
        self.register_buffer("assignment", assignment)
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # where, not a product: codebook * 0 would leave -0.0 for negative centroids
        return torch.where(
            self.mask, self.codebook[self.assignment], torch.zeros((), dtype=self.codebook.dtype)
        )


def share_weights(model: nn.Module, cfg: WeightSharingConfig, seed: int = 0) -> dict[str, nn.Module]:
    """Cluster every layer's non-zero weights and tie them to the codebook (parametrized in place)."""
    select_layers(model, list(cfg.layer_bits), key="layer_bits", require=False)  # names must exist
    tied = {}
    for name, module in select_layers(model, cfg.exclude, require=False):
        weight = module.weight.detach()
        mask = weight != 0
        if not bool(mask.any()):
            continue
        k = 2 ** cfg.bits_for(name, module)
        centroids, labels = kmeans_codebook(weight[mask].numpy(), k, cfg.init, seed)
        assignment = torch.zeros(weight.shape, dtype=torch.long)
        assignment[mask] = torch.as_tensor(labels, dtype=torch.long)
        shared = SharedWeights(torch.as_tensor(centroids, dtype=weight.dtype), assignment, mask)
        parametrize.register_parametrization(module, "weight", shared, unsafe=True)
        # Only the codebook trains: the original weight is replaced by the parametrization.
        module.parametrizations.weight.original.requires_grad_(False)
        tied[name] = module
        log.info(
            "weight sharing: %s -> %d centroids over %d non-zero weights",
            name,
            len(centroids),
            int(mask.sum()),
        )
    return tied


def weight_sharing(model: nn.Module, cfg: WeightSharingConfig, ctx: Context) -> nn.Module:
    tied = share_weights(model, cfg, seed=int(torch.initial_seed() % 2**31))
    if tied:
        loss_fn = None
        if cfg.kd_alpha > 0 and ctx.teacher is not None:
            kd = SoftKDConfig(temperature=cfg.temperature, alpha=cfg.kd_alpha)
            loss_fn = soft_target_loss(ctx.teacher, kd)
        ctx.train_model(model, loss_fn, label="weight sharing: centroid fine-tuning")
    for module in tied.values():
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.requires_grad_(True)
    return model


plugin = Method(
    WeightSharingConfig,
    weight_sharing,
    summary="k-means weight sharing with centroid fine-tuning (Deep Compression)",
)
