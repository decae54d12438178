"""Knowledge distillation with soft targets (Hinton, Vinyals & Dean 2015).

The loss terms and the training driver are shared with the other distillers (``_losses``).

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from shrinkflow.core.config import Config, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.training import LossFn
from shrinkflow.methods.distillation._losses import Weights, distill, logit_loss


@dataclass
class SoftKDConfig(Config):
    """``temperature`` softens both distributions; ``alpha`` weighs the soft term against hard labels."""

    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)

    def weights(self) -> Weights:
        return Weights(ce=1.0 - self.alpha, soft=self.alpha, temperature=self.temperature)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, cfg: SoftKDConfig) -> torch.Tensor:
    return logit_loss(student, teacher, y, cfg.weights())


def soft_target_loss(teacher: nn.Module, cfg: SoftKDConfig) -> LossFn:
    """``loss_fn(logits, x, y)`` of :func:`kd_loss` against ``teacher``'s logits on the same batch,
    for methods that train on soft targets outside the distill stage (AGP, QAT, weight sharing)."""
    teacher.eval()

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x)
        return kd_loss(logits, target, y, cfg)

    return loss_fn


def soft_kd(student: nn.Module, cfg: SoftKDConfig, ctx: Context) -> nn.Module:
    return distill(student, ctx, cfg.weights())


plugin = Method(
    SoftKDConfig, soft_kd, summary="soft-target knowledge distillation (KL at temperature T + CE)"
)
