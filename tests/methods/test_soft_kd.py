"""Soft-target distillation: the loss against a hand computation, its limits, and learning from a teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.models import MLP
from shrinkflow.core.training import predict, seed_everything
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, kd_loss, plugin
from shrinkflow.stages import DistillStage

STUDENT = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
TEACHER = torch.tensor([[0.0, 1.0, 4.0], [2.0, 0.0, -2.0]])
LABELS = torch.tensor([2, 1])


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _by_hand(student, teacher, y, t: float, alpha: float) -> float:
    kl = ce = 0.0
    for s_row, t_row, label in zip(student.tolist(), teacher.tolist(), y.tolist(), strict=True):
        p_s, p_t = _softmax(s_row, t), _softmax(t_row, t)
        kl += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        ce -= math.log(_softmax(s_row, 1.0)[label])
    n = len(y)
    return alpha * t * t * kl / n + (1 - alpha) * ce / n


@pytest.mark.parametrize(("t", "alpha"), [(4.0, 0.7), (1.0, 0.5), (2.0, 1.0), (0.5, 0.25)])
def test_kd_loss_matches_a_hand_computation(t, alpha):
    loss = kd_loss(STUDENT, TEACHER, LABELS, SoftKDConfig(temperature=t, alpha=alpha))
    assert float(loss) == pytest.approx(_by_hand(STUDENT, TEACHER, LABELS, t, alpha), rel=1e-5)


def test_kd_loss_known_value():
    # T=1, alpha=1, one sample: KL([.5, .5] || softmax([0, ln 3]) = [.25, .75]) = .5 ln 2 + .5 ln(2/3)
    student = torch.tensor([[0.0, math.log(3.0)]])
    teacher = torch.zeros(1, 2)
    loss = kd_loss(student, teacher, torch.tensor([0]), SoftKDConfig(temperature=1.0, alpha=1.0))
    assert float(loss) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)


def test_alpha_zero_is_plain_cross_entropy():
    loss = kd_loss(STUDENT, TEACHER, LABELS, SoftKDConfig(temperature=3.0, alpha=0.0))
    assert torch.equal(loss, F.cross_entropy(STUDENT, LABELS))


def test_alpha_one_ignores_the_labels():
    cfg = SoftKDConfig(alpha=1.0)
    assert torch.equal(
        kd_loss(STUDENT, TEACHER, LABELS, cfg), kd_loss(STUDENT, TEACHER, torch.tensor([0, 0]), cfg)
    )


def test_matching_the_teacher_leaves_only_the_hard_term():
    loss = kd_loss(TEACHER, TEACHER, LABELS, SoftKDConfig(alpha=0.7))
    assert float(loss) == pytest.approx(0.3 * float(F.cross_entropy(TEACHER, LABELS)), abs=1e-6)


def test_the_soft_term_is_scaled_by_t_squared():
    # logits scaled with T give the same soft distributions; the T^2 factor keeps gradients comparable
    for t in (1.0, 2.0, 8.0):
        loss = kd_loss(STUDENT * t, TEACHER * t, LABELS, SoftKDConfig(temperature=t, alpha=1.0))
        base = kd_loss(STUDENT, TEACHER, LABELS, SoftKDConfig(temperature=1.0, alpha=1.0))
        assert float(loss) == pytest.approx(t * t * float(base), rel=1e-5)


def test_distillation_makes_the_student_agree_with_the_teacher(trained_mlp, make_ctx, digits_splits):
    train, _, test = digits_splits
    # labels scrambled: with alpha=1 the student can only learn from the teacher's soft targets
    scrambled = Split.of(
        train.x, train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))], 10
    )
    seed_everything(1)
    student = MLP((1, 8, 8), 10, hidden=(32,))
    teacher_state = copy.deepcopy(trained_mlp.state_dict())
    teacher_pred = predict(trained_mlp, test.x).argmax(1)
    before = float((predict(student, test.x).argmax(1) == teacher_pred).float().mean())
    ctx = make_ctx(epochs=5, lr=1e-2, teacher=trained_mlp, train=scrambled)
    out = plugin.apply(student, SoftKDConfig(alpha=1.0), ctx)
    after = float((predict(out, test.x).argmax(1) == teacher_pred).float().mean())
    assert out is student
    assert before < 0.3 and after > 0.85
    assert [h.epoch for h in ctx.history] == [1, 2, 3, 4, 5]
    # the teacher is only read, never trained
    assert all(torch.equal(v, teacher_state[k]) for k, v in trained_mlp.state_dict().items())


def test_missing_teacher_is_a_config_error(make_ctx):
    with pytest.raises(ConfigError) as info:
        plugin.apply(MLP((1, 8, 8), 10, hidden=(8,)), SoftKDConfig(), make_ctx(epochs=1))
    assert info.value.key == "teacher" and info.value.value is None
    assert str(info.value) == "teacher=None is invalid: expected a teacher model for distillation"


def test_plugin_is_registered_with_its_defaults():
    assert plugins.load(plugins.DISTILLERS, "soft_kd") is plugin
    cfg = plugin.config({})
    assert cfg == SoftKDConfig(temperature=4.0, alpha=0.7)
    assert SoftKDConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0}, "temperature=0 is invalid: expected a number with 0.0 < temperature <= 100.0"),
        (
            {"temperature": 101},
            "temperature=101 is invalid: expected a number with 0.0 < temperature <= 100.0",
        ),
        ({"alpha": 1.5}, "alpha=1.5 is invalid: expected a number with 0.0 <= alpha <= 1.0"),
        ({"alpha": -0.1}, "alpha=-0.1 is invalid: expected a number with 0.0 <= alpha <= 1.0"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        SoftKDConfig(**options)
    assert str(info.value) == message


def test_stage_errors_carry_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^distill\.options\.soft_kd\.alpha=2 is invalid"):
        DistillStage(method="soft_kd", options={"soft_kd": {"alpha": 2}})
