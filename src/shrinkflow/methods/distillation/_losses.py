"""Pieces shared by the distillation methods: the loss terms, FitNets hints and the training driver.

Every distiller here trains the student on a weighted sum of up to four terms:

- ``ce``: cross-entropy on the true labels;
- ``soft``: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, the soft targets of
  Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015); the ``T^2``
  keeps its gradients on the scale of the hard terms;
- ``hard``: cross-entropy on the teacher's argmax labels (hard-label distillation);
- ``feature``: the hint loss of Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015):
  ``MSE(adapter(student_feature), teacher_feature)``, the adapter (a learned Linear, or a 1x1 Conv
  for conv feature maps) trained jointly with the student.

Features are captured with forward hooks (torch has no public feature-extraction API for arbitrary
eager modules besides FX, which fails on data-dependent code; hooks work on any module). The
adapter lives only during training: the method returns the student itself, so the artifact holds
only the student and ``restore`` stays the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.method import Context

__all__ = ["Hints", "Weights", "check_layer", "distill", "logit_loss", "require_teacher"]


@dataclass(frozen=True)
class Weights:
    """Weights of the four terms, and the temperature of the soft one."""

    ce: float = 0.0
    soft: float = 0.0
    hard: float = 0.0
    feature: float = 0.0
    temperature: float = 1.0


def logit_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor, w: Weights) -> torch.Tensor:
    """``w.ce * CE(y) + w.soft * T^2 KL(soft targets) + w.hard * CE(teacher argmax)``.

    Terms with weight 0 are not computed, so e.g. ``Weights(ce=1)`` is exactly cross-entropy.
    """
    terms: list[torch.Tensor] = []
    if w.ce:
        terms.append(w.ce * F.cross_entropy(student, y))
    if w.soft:
        t = w.temperature
        kl = F.kl_div(
            F.log_softmax(student / t, 1),
            F.log_softmax(teacher / t, 1),
            reduction="batchmean",
            log_target=True,
        )
        terms.append(w.soft * t * t * kl)
    if w.hard:
        terms.append(w.hard * F.cross_entropy(student, teacher.argmax(1)))
    if not terms:
        return student.sum() * 0.0
    return terms[0] if len(terms) == 1 else torch.stack(terms).sum()


def check_layer(key: str, value: Any) -> None:
    """A layer option is ``None`` (detect automatically) or a non-empty module name."""
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, value, "a module name (e.g. 'classifier.2') or null for the automatic choice")


def require_teacher(ctx: Context) -> nn.Module:
    if ctx.teacher is None:
        raise ConfigError("teacher", None, "a teacher model for distillation")
    return ctx.teacher.eval()


def _resolve(model: nn.Module, name: str | None, key: str, role: str) -> tuple[nn.Module, bool]:
    """(module to hook, whether to take its input). ``None``: the input of the last ``nn.Linear``,
    i.e. the last hidden representation; a name: that module's output."""
    modules = dict(model.named_modules())
    if name is None:
        linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
        if not linears:
            raise ConfigError(
                key,
                None,
                f"a module name: the {role} has no nn.Linear to take the default from; "
                f"available modules are {[n for n in modules if n]}",
            )
        return linears[-1], True
    if not name or name not in modules:
        raise ConfigError(key, name, f"a module name of the {role}; available: {[n for n in modules if n]}")
    return modules[name], False


def _adapter(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> nn.Module:
    """1x1 Conv between conv feature maps (pooled to the teacher's size if it differs), else Linear."""
    s, t = student_feat.shape[1:], teacher_feat.shape[1:]
    if len(s) == 3 and len(t) == 3:
        conv = nn.Conv2d(s[0], t[0], kernel_size=1)
        return conv if s[1:] == t[1:] else nn.Sequential(conv, nn.AdaptiveAvgPool2d(tuple(t[1:])))
    return nn.Sequential(nn.Flatten(), nn.Linear(s.numel(), t.numel()))


class Hints:
    """Forward hooks on one student and one teacher layer, and the adapter between them.

    Use as a context manager (the hooks are removed on exit). After a forward pass of both
    networks, :meth:`loss` is ``MSE(adapter(student feature), teacher feature)``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        student_layer: str | None,
        teacher_layer: str | None,
        probe: torch.Tensor,
    ) -> None:
        self._targets = {
            "student": _resolve(student, student_layer, "student_layer", "student"),
            "teacher": _resolve(teacher, teacher_layer, "teacher_layer", "teacher"),
        }
        self._names = {"student": student_layer, "teacher": teacher_layer}
        self._student, self._teacher, self._probe = student, teacher, probe
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.adapter: nn.Module = nn.Identity()

    def _hook(self, role: str, take_input: bool) -> Any:
        def hook(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            self._features[role] = args[0] if take_input else output

        return hook

    def __enter__(self) -> Hints:
        for role, (module, take_input) in self._targets.items():
            self._handles.append(module.register_forward_hook(self._hook(role, take_input)))
        try:
            self.adapter = self._probe_adapter()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _probe_adapter(self) -> nn.Module:
        was_training = self._student.training
        with torch.no_grad():  # one probe batch fixes the feature shapes, hence the adapter's
            self._student.eval()(self._probe)
            self._teacher(self._probe)
        self._student.train(was_training)
        for role in ("student", "teacher"):
            if role not in self._features:
                raise ConfigError(
                    f"{role}_layer", self._names[role], f"a module the {role}'s forward pass runs"
                )
        s, t = self._features["student"], self._features["teacher"]
        for role, feat in (("student", s), ("teacher", t)):
            if not isinstance(feat, torch.Tensor) or feat.dim() < 2:
                shape = tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__
                raise ConfigError(
                    f"{role}_layer", shape, "a layer whose output is one (N, ...) tensor per batch"
                )
        return _adapter(s, t)

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()

    def loss(self) -> torch.Tensor:
        student, teacher = self._features["student"], self._features["teacher"].detach()
        mapped = self.adapter(student)
        return F.mse_loss(mapped, teacher.reshape(mapped.shape))


class _WithAdapter(nn.Module):
    """The student plus the adapter, so the stage's optimizer trains both; forward is the student's."""

    def __init__(self, student: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.student, self.adapter = student, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def distill(
    student: nn.Module,
    ctx: Context,
    w: Weights,
    *,
    student_layer: str | None = None,
    teacher_layer: str | None = None,
    label: str = "distill",
) -> nn.Module:
    """Train ``student`` in place with ``ctx.train_model`` on the weighted terms; return it."""
    teacher = require_teacher(ctx)
    if not w.feature:

        def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = teacher(x)
            return logit_loss(logits, target, y, w)

        ctx.train_model(student, loss_fn, label=label)
        return student

    with Hints(student, teacher, student_layer, teacher_layer, ctx.probe()) as hints:

        def hint_loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                target = teacher(x)  # the teacher's hook captures its feature here
            return logit_loss(logits, target, y, w) + w.feature * hints.loss()

        ctx.train_model(_WithAdapter(student, hints.adapter), hint_loss_fn, label=label)
    return student
