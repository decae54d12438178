"""FitNets hint distillation (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

An intermediate layer of the student is regressed onto a layer of the teacher through a learned
adapter (Linear, or 1x1 Conv between conv feature maps), trained jointly with the student, on top
of the soft-target loss of Hinton et al. 2015:

loss = beta * MSE(adapter(student_feature), teacher_feature)
       + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)

FitNets trains the hint first and the KD loss second; one joint stage is simpler and fits the
pipeline's single training configuration. The adapter is used for training only: the returned
(and saved) model is the student alone, so ``restore`` is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from shrinkflow.core.config import Config, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.methods.distillation._losses import Weights, check_layer, distill


@dataclass
class FeatureKDConfig(Config):
    """``student_layer``/``teacher_layer``: module names (``model.named_modules()``) whose outputs are
    matched; ``null`` takes the input of each network's last Linear (its last hidden representation).
    ``beta`` weighs the hint term; ``temperature`` and ``alpha`` are soft_kd's."""

    student_layer: str | None = None
    teacher_layer: str | None = None
    beta: float = 1.0
    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        check_layer("student_layer", self.student_layer)
        check_layer("teacher_layer", self.teacher_layer)
        check_range("beta", self.beta, 0.0, 1000.0, low_open=True)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("alpha", self.alpha, 0.0, 1.0)

    def weights(self) -> Weights:
        return Weights(ce=1.0 - self.alpha, soft=self.alpha, feature=self.beta, temperature=self.temperature)


def feature_kd(student: nn.Module, cfg: FeatureKDConfig, ctx: Context) -> nn.Module:
    return distill(
        student, ctx, cfg.weights(), student_layer=cfg.student_layer, teacher_layer=cfg.teacher_layer
    )


plugin = Method(
    FeatureKDConfig,
    feature_kd,
    summary="FitNets hints: MSE between adapted student and teacher features + soft KD",
)
