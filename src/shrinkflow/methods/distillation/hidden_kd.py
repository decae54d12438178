"""Transformer layer distillation: hidden states (TinyBERT) and self-attention relations (MiniLMv2).

For a student with fewer or narrower layers than its teacher, on top of the soft targets of
Hinton et al. 2015 (``alpha``, ``temperature``) and the labels (``1 - alpha``):

- ``hidden``: Jiao et al. 2020, "TinyBERT". Student layer ``i`` of ``S`` is matched to teacher
  layer ``ceil((i + 1) * T / S) - 1`` of ``T`` (the uniform map), by the MSE between the student's
  hidden states, mapped by a learned Linear (``d_student -> d_teacher``, training only), and the
  teacher's, over real tokens (padding excluded).
- ``attention``: Wang et al. 2021, "MiniLMv2". In the last layer of each, the queries, keys and
  values are split into ``relation_heads`` relation heads; their scaled dot-product relations
  (``softmax(Q Q^T / sqrt(d_r))``, the same for K-K and V-V) are matched with the KL divergence
  over real tokens. Relation heads, unlike TinyBERT's attention-map MSE, need neither the same
  head count nor the same width in both models, so a pruned or narrower student works too.

The hidden states and q/k/v are read with forward hooks on the layers :func:`encoder_blocks` finds
(the built-in encoder, BERT-style ``transformers`` models); the projections live only during
training and the saved model is the student alone, so ``restore`` is the identity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.text import PAD_ID
from shrinkflow.core.textmodels import Block, encoder_blocks
from shrinkflow.methods.distillation._losses import Weights, _WithAdapter, logit_loss, require_teacher

__all__ = ["HiddenKDConfig", "hidden_kd", "layer_map", "plugin"]


@dataclass
class HiddenKDConfig(Config):
    """``hidden``/``attention``: weights of the TinyBERT hidden-state MSE and of the MiniLMv2
    relation KL (0 turns a term off); ``relation_heads`` must divide both last layers' q/k/v
    widths; ``alpha``, ``temperature``: soft targets as in soft_kd."""

    hidden: float = 1.0
    attention: float = 1.0
    relation_heads: int = 4
    alpha: float = 0.7
    temperature: float = 2.0

    def __post_init__(self) -> None:
        check_range("hidden", self.hidden, 0.0, 1000.0)
        check_range("attention", self.attention, 0.0, 1000.0)
        check_range("relation_heads", self.relation_heads, 1, 1024, integer=True)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer learns from (TinyBERT's uniform strategy)."""
    return [math.ceil((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


def _blocks(model: nn.Module, role: str) -> list[Block]:
    blocks = encoder_blocks(model)
    if not blocks:
        raise ConfigError(
            "distill.method hidden_kd",
            f"{role} {type(model).__name__}",
            "transformer encoders on both sides (transformer_encoder, BERT-style transformers "
            "models); use feature_kd for other models",
        )
    return blocks


def check(model: nn.Module, cfg: HiddenKDConfig, input_shape: tuple[int, ...]) -> None:
    _blocks(model, "student")


class _Taps:
    """Forward hooks recording each block's output hidden states and the last block's q/k/v."""

    def __init__(self, blocks: list[Block]) -> None:
        self.hidden: list[torch.Tensor] = [torch.empty(0)] * len(blocks)
        self.qkv: list[torch.Tensor] = [torch.empty(0)] * 3
        self.handles = [
            b.layer.register_forward_hook(self._keep(self.hidden, i)) for i, b in enumerate(blocks)
        ]
        self.handles += [
            p.register_forward_hook(self._keep(self.qkv, j)) for j, p in enumerate(blocks[-1].projections)
        ]

    @staticmethod
    def _keep(store: list[torch.Tensor], index: int) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            store[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _relation_kl(
    student: torch.Tensor, teacher: torch.Tensor, heads: int, real: torch.Tensor
) -> torch.Tensor:
    """MiniLMv2: KL(teacher relation || student relation) of one of Q, K or V, per relation head,
    averaged over real query tokens; padded keys are masked out of both softmaxes."""

    def relations(x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        x = x.float().view(n, length, heads, width // heads).transpose(1, 2)
        scores = x @ x.transpose(-1, -2) / math.sqrt(width // heads)
        return scores.masked_fill(~real[:, None, None, :], -1e9).log_softmax(-1)

    s, t = relations(student), relations(teacher)
    kl = (t.exp() * (t - s)).masked_fill(~real[:, None, None, :], 0.0).sum(-1)  # (N, heads, L)
    weights = real[:, None, :].float()
    return (kl * weights).sum() / (weights.sum() * heads)


def hidden_kd(student: nn.Module, cfg: HiddenKDConfig, ctx: Context) -> nn.Module:
    teacher = require_teacher(ctx)
    s_blocks, t_blocks = _blocks(student, "student"), _blocks(teacher, "teacher")
    s_width = s_blocks[-1].attn.query.out_features
    t_width = t_blocks[-1].attn.query.out_features
    if cfg.attention and (s_width % cfg.relation_heads or t_width % cfg.relation_heads):
        raise ConfigError(
            "relation_heads", cfg.relation_heads, f"a divisor of both q/k/v widths ({s_width}, {t_width})"
        )
    pairs = layer_map(len(s_blocks), len(t_blocks))
    d_s, d_t = s_blocks[0].out.out_features, t_blocks[0].out.out_features
    projections = nn.ModuleList(nn.Linear(d_s, d_t) for _ in pairs)
    soft = Weights(ce=1.0 - cfg.alpha, soft=cfg.alpha, temperature=cfg.temperature)
    s_taps, t_taps = _Taps(s_blocks), _Taps(t_blocks)

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x)
        loss = logit_loss(logits, target, y, soft)
        real = x != PAD_ID
        if cfg.hidden:
            keep = real.unsqueeze(-1).float()
            for i, j in enumerate(pairs):
                error = (projections[i](s_taps.hidden[i]) - t_taps.hidden[j].detach()).pow(2) * keep
                loss = loss + cfg.hidden * error.sum() / (keep.sum() * d_t) / len(pairs)
        if cfg.attention:
            for s, t in zip(s_taps.qkv, t_taps.qkv, strict=True):
                loss = loss + cfg.attention * _relation_kl(s, t.detach(), cfg.relation_heads, real) / 3
        return loss

    try:
        ctx.train_model(_WithAdapter(student, projections), loss_fn, label="hidden_kd")
    finally:
        s_taps.close()
        t_taps.close()
    return student


plugin = Method(
    HiddenKDConfig,
    hidden_kd,
    summary="TinyBERT hidden-state MSE + MiniLMv2 self-attention relations + soft KD (transformers)",
    check=check,
)
