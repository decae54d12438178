"""Hard-label distillation: train the student on the teacher's argmax predictions.

The teacher relabels every batch with its top-1 class (the "hard" targets Hinton et al. 2015
compare soft targets against; used as "hard distillation" by Touvron et al. 2021, DeiT):

loss = alpha * CE(student, argmax teacher) + (1 - alpha) * CE(student, y)
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shrinkflow.core.config import Config, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods.distillation._losses import Weights, distill


@dataclass
class HardKDConfig(Config):
    """``alpha``: weight of the teacher's labels; ``1 - alpha`` goes to the true labels."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        check_range("alpha", self.alpha, 0.0, 1.0)

    def weights(self) -> Weights:
        return Weights(ce=1.0 - self.alpha, hard=self.alpha)


def hard_kd(student: nn.Module, cfg: HardKDConfig, ctx: Context) -> nn.Module:
    return distill(student, ctx, cfg.weights())


plugin = Method(
    HardKDConfig, hard_kd, summary="hard-label distillation (CE on the teacher's argmax, mixed with CE)"
)
