"""Structured channel (filter) pruning: remove whole channels / hidden units, then fine-tune.

Filters are ranked by an importance criterion (L1 norm, Li et al. 2017 "Pruning Filters for
Efficient ConvNets"; L2 norm; first-order Taylor, Molchanov et al. 2019; random as a baseline) and
removed for real, so parameters and MACs fall, not just the count of non-zeros. Coupled layers (the
next layer's input channels, a Flatten feeding a Linear, batch norms) are cut consistently by
Torch-Pruning's dependency graph (Fang et al. 2023, "DepGraph: Towards Any Structural Pruning").

Torch-Pruning's own checkpoint format needs unsafe unpickling, so :func:`structure` records the
pruned widths as plain data and :func:`restore` cuts a freshly built model to those widths with
Torch-Pruning's per-layer pruning functions; the saved state_dict then fits it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.data import Split
from shrinkflow.core.method import Context, Method
from shrinkflow.core.runtime import on_device
from shrinkflow.core.textmodels import encoder_blocks

IMPORTANCES = ("l1", "l2", "taylor", "random")
_TAYLOR_BATCH = 64
# Layer kinds whose width Torch-Pruning can cut with a per-layer function (restore uses the same ones).
_RESHAPEABLE = {
    tp.ops.OPTYPE.CONV,
    tp.ops.OPTYPE.DEPTHWISE_CONV,
    tp.ops.OPTYPE.LINEAR,
    tp.ops.OPTYPE.BN,
    tp.ops.OPTYPE.LN,
    tp.ops.OPTYPE.GN,
    tp.ops.OPTYPE.IN,
    tp.ops.OPTYPE.PRELU,
    tp.ops.OPTYPE.EMBED,
}


@dataclass
class ChannelConfig(Config):
    """``ratio``: fraction of each prunable layer's output channels removed (of the whole network's
    with ``global_pruning``); ``importance``: l1 | l2 | taylor | random; ``iterative_steps``: prune
    in that many equal steps, fine-tuning after each; ``ignore``: module names whose outputs are kept
    (the classifier is always kept); ``taylor_batches``: batches of 64 whose loss gradients feed the
    Taylor criterion."""

    ratio: float = 0.5
    importance: str = "l1"
    global_pruning: bool = False
    iterative_steps: int = 1
    ignore: list[str] = field(default_factory=list)
    taylor_batches: int = 4

    def __post_init__(self) -> None:
        check_range("ratio", self.ratio, 0.0, 1.0, high_open=True)
        check_choice("importance", self.importance, IMPORTANCES)
        if not isinstance(self.global_pruning, bool):
            raise ConfigError("global_pruning", self.global_pruning, "true or false")
        check_range("iterative_steps", self.iterative_steps, 1, 100, integer=True)
        if not isinstance(self.ignore, list) or not all(isinstance(n, str) for n in self.ignore):
            raise ConfigError("ignore", self.ignore, "a list of module names")
        check_range("taylor_batches", self.taylor_batches, 1, 10_000, integer=True)


def _importance(name: str) -> Any:
    if name == "taylor":
        return tp.importance.TaylorImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)


def classifier_name(model: nn.Module, num_classes: int) -> str | None:
    """The last ``nn.Linear`` producing ``num_classes`` outputs (the output layer), if any."""
    heads = [
        n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes
    ]
    return heads[-1] if heads else None


def _kept_layers(model: nn.Module, cfg: ChannelConfig, num_classes: int) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = sorted(set(cfg.ignore) - set(modules))
    if unknown:
        prunable = [n for n, m in modules.items() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise ConfigError("ignore", unknown, f"module names of the model, e.g. {prunable}")
    names = list(cfg.ignore)
    head = classifier_name(model, num_classes)
    if head is None and not names:
        raise ConfigError(
            "ignore", names, f"the output layer's name: no nn.Linear produces {num_classes} outputs"
        )
    if head is not None and head not in names:
        names.append(head)
    return [modules[n] for n in names]


def _taylor_gradients(model: nn.Module, train: Split, batches: int, device: torch.device) -> None:
    """Accumulate cross-entropy gradients over a few random training batches (eval mode: no
    dropout noise, batch-norm statistics untouched; no augmentation), on ``device``; the model
    and its ``.grad`` fields are back on the CPU after."""
    model.eval()
    model.zero_grad(set_to_none=True)
    train = train.for_eval()
    order = torch.randperm(len(train))[: batches * _TAYLOR_BATCH]
    with on_device(model, device=device):
        for start in range(0, len(order), _TAYLOR_BATCH):
            x, y = train.take(order[start : start + _TAYLOR_BATCH])
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()


def check(model: nn.Module, cfg: ChannelConfig, input_shape: Any) -> None:
    """Transformers: the dependency graph cuts q/k/v channels one by one, leaving heads of
    different widths that the attention reshape cannot split; their structured method is heads."""
    if encoder_blocks(model):
        raise ConfigError(
            "prune.method channel",
            type(model).__name__,
            "a model without attention layers: channel pruning would cut heads unevenly; for "
            "transformers use heads (attention heads and FFN neurons) or layer_drop",
        )


def channel_prune(model: nn.Module, cfg: ChannelConfig, ctx: Context) -> nn.Module:
    pruner = tp.pruner.BasePruner(
        model,
        ctx.probe(),
        importance=_importance(cfg.importance),
        global_pruning=cfg.global_pruning,
        pruning_ratio=cfg.ratio,
        iterative_steps=cfg.iterative_steps,
        ignored_layers=_kept_layers(model, cfg, ctx.train.num_classes),
    )
    for step in range(1, cfg.iterative_steps + 1):
        if cfg.importance == "taylor":
            _taylor_gradients(model, ctx.train, cfg.taylor_batches, ctx.runtime.device)
        pruner.step()
        model.zero_grad(set_to_none=True)
        ctx.train_model(model, label=f"channel finetune {step}/{cfg.iterative_steps}")
    return model


def _layer_fn(module: nn.Module) -> Any:
    kind = tp.ops.module2type(module)
    return tp.pruner.function.PrunerBox[kind] if kind in _RESHAPEABLE else None


def structure(model: nn.Module) -> dict[str, Any]:
    """``{"widths": {module name: [out channels, in channels]}}`` for every reshapeable layer."""
    widths = {}
    for name, module in model.named_modules():
        fn = _layer_fn(module)
        if name and fn is not None:
            widths[name] = [int(fn.get_out_channels(module)), int(fn.get_in_channels(module))]
    return {"widths": widths}


def restore(model: nn.Module, cfg: ChannelConfig, record: dict[str, Any] | None = None) -> nn.Module:
    """Cut a freshly built ``model`` to the recorded widths. Which indices go does not matter (the
    saved weights are loaded next), so the trailing ones are removed."""
    if not record or not isinstance(record.get("widths"), dict):
        raise ConfigError("structure", record, "the {'widths': {...}} record written by channel.structure")
    modules = dict(model.named_modules())
    for name, (out_ch, in_ch) in record["widths"].items():
        module = modules.get(name)
        fn = None if module is None else _layer_fn(module)
        if fn is None:
            raise ConfigError("structure.widths", name, "names of reshapeable layers of the fresh model")
        for target, get, cut in (
            (out_ch, fn.get_out_channels, fn.prune_out_channels),
            (in_ch, fn.get_in_channels, fn.prune_in_channels),
        ):
            current = int(get(module))
            if target > current:
                raise ConfigError(f"structure.widths.{name}", target, f"at most {current} channels")
            if target < current:
                cut(module, list(range(target, current)))
    return model


plugin = Method(
    ChannelConfig,
    channel_prune,
    restore,
    summary="structured channel pruning (Torch-Pruning dependency graph) + fine-tuning",
    structure=structure,
    check=check,
)
