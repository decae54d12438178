"""Low-rank factorization of Linear and Conv2d layers by truncated SVD, then fine-tuning.

Following Denton et al. 2014 ("Exploiting Linear Structure Within Convolutional Networks for
Efficient Evaluation") and Jaderberg et al. 2014 ("Speeding up Convolutional Neural Networks with
Low Rank Expansions"): a weight W (out x in) is replaced by its best rank-r approximation
U_r S_r V_r^T (Eckart-Young), split into two thinner layers:

* ``Linear(in, out)`` -> ``Sequential(Linear(in, r, bias=False), Linear(r, out))``;
* ``Conv2d(c_in, c_out, k)`` -> ``Sequential(Conv2d(c_in, r, k, bias=False), Conv2d(r, c_out, 1))``,
  from the SVD of the weight reshaped to (c_out, c_in*k*k); the first convolution keeps the
  original stride, padding and dilation.

The rank is fixed (``rank``) or the smallest keeping a fraction ``energy`` of the squared singular
values. Hand-written on ``torch.linalg.svd``: torch, torchao and Torch-Pruning offer no layer
factorization, and these few lines are the whole method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.method import Context, Method

_EXACTLY_ONE = "exactly one of rank (an integer >= 1) and energy (0 < energy <= 1); set the other to null"


@dataclass
class LowRankConfig(Config):
    """``rank``: one rank for every layer (capped at full rank), or ``energy``: per layer the smallest
    rank keeping that fraction of the squared singular values; ``exclude``: module names left
    whole; ``min_reduction``: factorize a layer only when its factors have fewer than
    (1 - min_reduction) x its weight parameters."""

    rank: int | None = None
    energy: float | None = 0.9
    exclude: list[str] = field(default_factory=list)
    min_reduction: float = 0.0

    def __post_init__(self) -> None:
        if (self.rank is None) == (self.energy is None):
            raise ConfigError("rank", {"rank": self.rank, "energy": self.energy}, _EXACTLY_ONE)
        if self.rank is not None:
            check_range("rank", self.rank, 1, None, integer=True)
        if self.energy is not None:
            check_range("energy", self.energy, 0.0, 1.0, low_open=True)
        if not isinstance(self.exclude, list) or not all(isinstance(n, str) for n in self.exclude):
            raise ConfigError("exclude", self.exclude, "a list of module names")
        check_range("min_reduction", self.min_reduction, 0.0, 1.0, high_open=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, key: str = "") -> LowRankConfig:
        """A mapping that sets ``rank`` and leaves ``energy`` out means "rank instead of the default
        energy" (``{rank: 8}`` works alone); naming both is still an error."""
        data = dict(data or {})
        if data.get("rank") is not None and "energy" not in data:
            data["energy"] = None
        return super().from_dict(data, key=key)


def select_rank(singular_values: torch.Tensor, cfg: LowRankConfig) -> int:
    """The configured rank, or the smallest r with sum(s[:r]^2) >= energy * sum(s^2); at most full rank."""
    full = int(singular_values.numel())
    if cfg.rank is not None:
        return min(cfg.rank, full)
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(power, 0) / total
    return min(full, int((kept < cfg.energy - 1e-12).sum()) + 1)


def _dims(layer: nn.Module) -> tuple[int, int]:
    """(rows, columns) of the layer's weight matrix: (out, in) or (c_out, c_in*kh*kw)."""
    weight = layer.weight
    return int(weight.shape[0]), int(weight[0].numel())


def _factorizable(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return isinstance(layer, nn.Conv2d) and layer.groups == 1


class LowRankPair(nn.Sequential):
    """The two factors replacing one layer (a Sequential, so state_dict keys are ``name.0/1.*``);
    its own type marks it for :func:`structure`."""


def _shell(layer: nn.Module, rank: int) -> LowRankPair:
    """The two-layer replacement with the right shapes (weights uninitialised)."""
    kw = {"device": layer.weight.device, "dtype": layer.weight.dtype}
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        return LowRankPair(
            nn.Linear(layer.in_features, rank, bias=False, **kw),
            nn.Linear(rank, layer.out_features, bias=has_bias, **kw),
        )
    first = nn.Conv2d(
        layer.in_channels,
        rank,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        dilation=layer.dilation,
        bias=False,
        padding_mode=layer.padding_mode,
        **kw,
    )
    return LowRankPair(first, nn.Conv2d(rank, layer.out_channels, 1, bias=has_bias, **kw))


@torch.no_grad()
def factorize(layer: nn.Module, rank: int) -> LowRankPair:
    """Replace ``layer`` by its rank-``rank`` SVD factors (sqrt(S) split evenly between them)."""
    out_dim, in_dim = _dims(layer)
    u, s, vh = torch.linalg.svd(layer.weight.detach().double().reshape(out_dim, in_dim), full_matrices=False)
    root = s[:rank].sqrt()
    seq = _shell(layer, rank)
    first, second = seq[0], seq[1]
    first.weight.copy_((root[:, None] * vh[:rank]).reshape(first.weight.shape))
    second.weight.copy_((u[:, :rank] * root).reshape(second.weight.shape))
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return seq


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
    return model


def _candidates(model: nn.Module, cfg: LowRankConfig) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if _factorizable(m)]
    unknown = sorted(set(cfg.exclude) - {n for n, _ in layers})
    if unknown:
        raise ConfigError("exclude", unknown, f"names of Linear/Conv2d layers {[n for n, _ in layers]}")
    return [(n, m) for n, m in layers if n not in cfg.exclude]


def choose_ranks(model: nn.Module, cfg: LowRankConfig) -> dict[str, int]:
    """{layer name: rank} for the layers worth factorizing under ``cfg``."""
    ranks = {}
    for name, layer in _candidates(model, cfg):
        out_dim, in_dim = _dims(layer)
        matrix = layer.weight.detach().double().reshape(out_dim, in_dim)
        rank = select_rank(torch.linalg.svdvals(matrix), cfg)
        if rank * (out_dim + in_dim) < (1.0 - cfg.min_reduction) * out_dim * in_dim:
            ranks[name] = rank
    return ranks


def lowrank(model: nn.Module, cfg: LowRankConfig, ctx: Context) -> nn.Module:
    for name, rank in choose_ranks(model, cfg).items():
        model = _replace(model, name, factorize(model.get_submodule(name), rank))
    ctx.train_model(model, label="lowrank finetune")
    return model


def structure(model: nn.Module) -> dict[str, Any]:
    """``{"ranks": {layer name: rank}}`` for every factorized layer."""
    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, LowRankPair):
            ranks[name] = _dims(module[0])[0]
    return {"ranks": ranks}


def restore(model: nn.Module, cfg: LowRankConfig, record: dict[str, Any] | None = None) -> nn.Module:
    """Replace the recorded layers of a freshly built ``model`` by factor shells of the recorded ranks."""
    if not record or not isinstance(record.get("ranks"), dict):
        raise ConfigError("structure", record, "the {'ranks': {...}} record written by lowrank.structure")
    modules = dict(model.named_modules())
    for name, rank in record["ranks"].items():
        layer = modules.get(name)
        if layer is None or not _factorizable(layer):
            raise ConfigError("structure.ranks", name, "names of Linear/Conv2d layers of the fresh model")
        model = _replace(model, name, _shell(layer, int(rank)))
    return model


plugin = Method(
    LowRankConfig,
    lowrank,
    restore,
    summary="truncated-SVD low-rank factorization of Linear/Conv2d layers + fine-tuning",
    structure=structure,
)
