"""A weighted combination of the distillation losses:

loss = w_ce * CE(student, y) + w_soft * T^2 * KL(softmax(teacher/T) || softmax(student/T))
       + w_hard * CE(student, argmax teacher) + w_feature * MSE(adapter(student_feature), teacher_feature)

Soft targets: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).
Hints (the feature term, with its jointly trained adapter): Romero et al., "FitNets: Hints for Thin
Deep Nets" (ICLR 2015). The terms are those of soft_kd, hard_kd and feature_kd (shared code in
``_losses``); terms with weight 0 are not computed. The adapter is training-only (identity restore).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods.distillation._losses import Weights, check_layer, distill

WEIGHT_KEYS = ("w_ce", "w_soft", "w_hard", "w_feature")


@dataclass
class CombinedKDConfig(Config):
    """Weights of the four terms (each >= 0, at least one > 0), the soft term's ``temperature`` and
    the hint layers (``null``: the input of each network's last Linear)."""

    w_ce: float = 0.3
    w_soft: float = 0.7
    w_hard: float = 0.0
    w_feature: float = 0.5
    temperature: float = 4.0
    student_layer: str | None = None
    teacher_layer: str | None = None

    def __post_init__(self) -> None:
        for key in WEIGHT_KEYS:
            check_range(key, getattr(self, key), 0.0, 1000.0)
        if not any(getattr(self, key) > 0 for key in WEIGHT_KEYS):
            raise ConfigError(
                "/".join(WEIGHT_KEYS), [getattr(self, k) for k in WEIGHT_KEYS], "at least one weight > 0"
            )
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_layer("student_layer", self.student_layer)
        check_layer("teacher_layer", self.teacher_layer)

    def weights(self) -> Weights:
        return Weights(
            ce=self.w_ce,
            soft=self.w_soft,
            hard=self.w_hard,
            feature=self.w_feature,
            temperature=self.temperature,
        )


def combined_kd(student: nn.Module, cfg: CombinedKDConfig, ctx: Context) -> nn.Module:
    return distill(
        student, ctx, cfg.weights(), student_layer=cfg.student_layer, teacher_layer=cfg.teacher_layer
    )


plugin = Method(
    CombinedKDConfig,
    combined_kd,
    summary="weighted CE + soft-target KL + teacher-label CE + FitNets hint loss",
)
