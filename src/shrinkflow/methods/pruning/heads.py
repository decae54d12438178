"""Structured transformer pruning: remove whole attention heads and FFN neurons, then fine-tune.

Importance (``importance``):

- ``taylor``: Michel, Levy & Neubig 2019 ("Are Sixteen Heads Really Better than One?"). A head's
  score is the expected magnitude of the loss gradient with respect to a gate ``xi_h`` multiplying
  its output, at ``xi_h = 1``. That gradient equals ``sum(ctx_h * dL/dctx_h)`` over the head's slice
  of the output projection's input, so it is read from one forward hook per layer, without adding
  gates to the model. FFN neurons are scored the same way on the second FFN Linear's input (the
  neuron gates of Michel's follow-up work and of CoFi). Scores are normalised per layer (L2), as in
  Michel et al., so one global ranking compares layers fairly.
- ``l1``: the L1 norm of the weights a head (q/k/v rows + output columns) or neuron (FFN rows +
  columns) owns; data-free.

The lowest-scoring ``head_ratio`` of all heads and ``ffn_ratio`` of all FFN neurons go, one
ranking over the whole encoder (``scope: global``; every layer keeps at least one head and one
neuron) or the same share per layer (``layer``). Removal is physical: q/k/v lose rows, the output
projection and the second FFN Linear lose input columns, the head count shrinks, and parameters,
MACs and latency fall with them.

Written here rather than with Torch-Pruning: its dependency graph treats the q/k/v Linears as
independent channels unless told each model's head layout, and neither it nor ``transformers``
(whose ``prune_heads`` was removed in v5) gives Michel's gradient importance or prunes FFN neurons
together with heads on both the built-in encoder and BERT-style models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.textmodels import Block, encoder_blocks

__all__ = [
    "HeadsConfig",
    "check",
    "cut_block",
    "head_scores",
    "heads_prune",
    "plugin",
    "restore",
    "structure",
]


@dataclass
class HeadsConfig(Config):
    """``head_ratio``/``ffn_ratio``: fraction of the encoder's attention heads / FFN neurons
    removed; ``importance``: taylor (Michel et al. head-mask gradients) | l1; ``scope``: global |
    layer; ``iterative_steps``: remove in that many equal steps, fine-tuning after each;
    ``batches`` x ``batch_size`` training samples accumulate the taylor scores."""

    head_ratio: float = 0.5
    ffn_ratio: float = 0.5
    importance: str = "taylor"
    scope: str = "global"
    iterative_steps: int = 1
    batches: int = 16
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_range("head_ratio", self.head_ratio, 0.0, 1.0, high_open=True)
        check_range("ffn_ratio", self.ffn_ratio, 0.0, 1.0, high_open=True)
        check_choice("importance", self.importance, ["taylor", "l1"])
        check_choice("scope", self.scope, ["global", "layer"])
        check_range("iterative_steps", self.iterative_steps, 1, 100, integer=True)
        check_range("batches", self.batches, 1, 100_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1_000_000, integer=True)


def _blocks(model: nn.Module, method: str = "heads") -> list[Block]:
    blocks = encoder_blocks(model)
    if not blocks:
        raise ConfigError(
            f"prune.method {method}",
            type(model).__name__,
            "a transformer encoder (transformer_encoder, or a BERT-style transformers model); "
            "for convolutional or MLP models use channel",
        )
    return blocks


def check(model: nn.Module, cfg: HeadsConfig, input_shape: tuple[int, ...]) -> None:
    _blocks(model)


def _per_head(block: Block, values: torch.Tensor) -> torch.Tensor:
    return values.view(block.heads, block.head_dim).sum(1)


def _l1(block: Block) -> tuple[torch.Tensor, torch.Tensor]:
    rows = sum(p.weight.detach().abs().sum(1) for p in block.projections)
    heads = _per_head(block, rows + block.out.weight.detach().abs().sum(0))
    ffn = block.ffn_in.weight.detach().abs().sum(1) + block.ffn_out.weight.detach().abs().sum(0)
    return heads, ffn


def head_scores(model: nn.Module, cfg: HeadsConfig, ctx: Context) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(head scores, FFN neuron scores) per block, each normalised to unit L2 norm in its layer."""
    blocks = _blocks(model)
    raw = [_l1(b) for b in blocks] if cfg.importance == "l1" else _taylor(model, blocks, cfg, ctx)
    return [(h / h.norm().clamp(min=1e-12), f / f.norm().clamp(min=1e-12)) for h, f in raw]


def _taylor(model: nn.Module, blocks: list[Block], cfg: HeadsConfig, ctx: Context) -> list[tuple[Any, Any]]:
    """|sum over a sample's tokens of ctx . dL/dctx| per head (and per FFN neuron), summed over samples."""
    device = ctx.runtime.device
    data = ctx.train.for_eval()
    size = min(cfg.batch_size, len(data))
    order = torch.cat([torch.randperm(len(data)) for _ in range(-(-cfg.batches * size // len(data)))])
    scores = [[torch.zeros(b.heads), torch.zeros(b.ffn_in.out_features)] for b in blocks]
    inputs: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            args[0].retain_grad()
            inputs[index] = args[0]

        return hook

    targets = [m for b in blocks for m in (b.out, b.ffn_out)]
    handles = [m.register_forward_pre_hook(keep(i)) for i, m in enumerate(targets)]
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        for b in range(cfg.batches):
            x, y = data.take(order[b * size : (b + 1) * size])
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            for i, block in enumerate(blocks):
                for j in (0, 1):
                    act = inputs[2 * i + j]
                    per_unit = (act * act.grad).sum(1).float()  # (N, units): the gate gradient per sample
                    if j == 0:
                        per_unit = per_unit.view(len(per_unit), block.heads, block.head_dim).sum(-1)
                    scores[i][j] += per_unit.abs().sum(0).cpu()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
        model.cpu()
        model.train(was_training)
    return [(h, f) for h, f in scores]


def _plan(scores: list[torch.Tensor], ratio: float, scope: str) -> list[torch.Tensor]:
    """Indices kept in each layer: the lowest-scoring ``ratio`` removed, at least one kept per layer."""
    if scope == "layer":
        return [
            s.argsort(descending=True)[: max(1, round(len(s) * (1 - ratio)))].sort().values for s in scores
        ]
    total = sum(len(s) for s in scores)
    remove = round(total * ratio)
    # each layer's best unit is protected; the rest compete in one ranking
    values = torch.cat([s.clone() for s in scores])
    offsets = [0]
    for s in scores:
        offsets.append(offsets[-1] + len(s))
    for i, s in enumerate(scores):
        values[offsets[i] + int(s.argmax())] = float("inf")
    gone = set(values.argsort()[: min(remove, total - len(scores))].tolist())
    return [
        torch.tensor([k for k in range(len(s)) if offsets[i] + k not in gone], dtype=torch.long)
        for i, s in enumerate(scores)
    ]


def _rows(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[index].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[index].clone())
    linear.out_features = len(index)


def _columns(linear: nn.Linear, index: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, index].clone())
    linear.in_features = len(index)


def cut_block(block: Block, heads: torch.Tensor, neurons: torch.Tensor) -> None:
    """Keep only the heads and FFN neurons indexed (sorted indices) in ``block``."""
    dims = (heads[:, None] * block.head_dim + torch.arange(block.head_dim)).flatten()
    for projection in block.projections:
        _rows(projection, dims)
    _columns(block.out, dims)
    block.set_heads(len(heads))
    _rows(block.ffn_in, neurons)
    _columns(block.ffn_out, neurons)


def heads_prune(model: nn.Module, cfg: HeadsConfig, ctx: Context) -> nn.Module:
    blocks = _blocks(model)
    start = [(b.heads, b.ffn_in.out_features) for b in blocks]
    for step in range(1, cfg.iterative_steps + 1):
        share = step / cfg.iterative_steps
        scores = head_scores(model, cfg, ctx)
        # this step's ratio of the *current* widths that reaches share * target of the original ones
        now_h, now_f = sum(b.heads for b in blocks), sum(b.ffn_in.out_features for b in blocks)
        goal_h = sum(h for h, _ in start) * (1 - cfg.head_ratio * share)
        goal_f = sum(f for _, f in start) * (1 - cfg.ffn_ratio * share)
        keep_h = _plan([h for h, _ in scores], max(0.0, 1 - goal_h / now_h), cfg.scope)
        keep_f = _plan([f for _, f in scores], max(0.0, 1 - goal_f / now_f), cfg.scope)
        for block, h, f in zip(blocks, keep_h, keep_f, strict=True):
            cut_block(block, h, f)
        ctx.train_model(model, label=f"heads finetune {step}/{cfg.iterative_steps}")
    return model


def structure(model: nn.Module) -> dict[str, Any]:
    """``{"blocks": {layer name: [heads, ffn width]}}``."""
    return {"blocks": {b.name: [b.heads, b.ffn_in.out_features] for b in encoder_blocks(model)}}


def restore(model: nn.Module, cfg: HeadsConfig, record: dict[str, Any] | None = None) -> nn.Module:
    """Cut a freshly built ``model`` to the recorded head counts and FFN widths (the first ones are
    kept: the saved weights are loaded next)."""
    if not record or not isinstance(record.get("blocks"), dict):
        raise ConfigError("structure", record, "the {'blocks': {...}} record written by heads.structure")
    blocks = {b.name: b for b in encoder_blocks(model)}
    for name, widths in record["blocks"].items():
        block = blocks.get(name)
        if block is None:
            raise ConfigError(
                "structure.blocks", name, f"transformer layers of the fresh model {sorted(blocks)}"
            )
        heads, ffn = (int(w) for w in widths)
        if not (1 <= heads <= block.heads and 1 <= ffn <= block.ffn_in.out_features):
            raise ConfigError(
                f"structure.blocks.{name}", widths, f"at most [{block.heads}, {block.ffn_in.out_features}]"
            )
        cut_block(block, torch.arange(heads), torch.arange(ffn))
    return model


plugin = Method(
    HeadsConfig,
    heads_prune,
    restore,
    summary="attention-head and FFN-neuron pruning (Michel et al. 2019 gradients or L1) + fine-tuning",
    structure=structure,
    check=check,
)
