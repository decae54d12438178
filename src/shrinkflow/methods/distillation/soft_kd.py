"""Knowledge distillation with soft targets (Hinton et al. 2015).

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.method import Context, Method


@dataclass
class SoftKDConfig(Config):
    """``temperature`` softens both distributions; ``alpha`` weighs the soft term against hard labels."""

    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, cfg: SoftKDConfig) -> torch.Tensor:
    t = cfg.temperature
    soft = F.kl_div(
        F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean", log_target=True
    )
    return cfg.alpha * t * t * soft + (1.0 - cfg.alpha) * F.cross_entropy(student, y)


def soft_kd(student: nn.Module, cfg: SoftKDConfig, ctx: Context) -> nn.Module:
    teacher = ctx.teacher
    if teacher is None:
        raise ConfigError("teacher", None, "a teacher model for distillation")
    teacher.eval()

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(x)
        return kd_loss(logits, target, y, cfg)

    ctx.train_model(student, loss_fn, label="distill")
    return student


plugin = Method(
    SoftKDConfig, soft_kd, summary="soft-target knowledge distillation (KL at temperature T + CE)"
)
