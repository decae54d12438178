"""Hard-label distillation: the loss against a hand computation, its limits, and learning from a teacher."""

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
from shrinkflow.methods.distillation._losses import logit_loss
from shrinkflow.methods.distillation.hard_kd import HardKDConfig, plugin
from shrinkflow.stages import DistillStage

STUDENT = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
TEACHER = torch.tensor([[0.0, 4.0, 1.0], [2.0, 0.0, -2.0]])  # argmax: [1, 0]
LABELS = torch.tensor([2, 1])


def _nll(row: list[float], label: int) -> float:
    return -(row[label] - math.log(sum(math.exp(v) for v in row)))


def _loss(cfg: HardKDConfig, y: torch.Tensor = LABELS) -> float:
    return float(logit_loss(STUDENT, TEACHER, y, cfg.weights()))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_loss_matches_a_hand_computation(alpha):
    rows = STUDENT.tolist()
    teacher_ce = (_nll(rows[0], 1) + _nll(rows[1], 0)) / 2
    true_ce = (_nll(rows[0], 2) + _nll(rows[1], 1)) / 2
    assert _loss(HardKDConfig(alpha=alpha)) == pytest.approx(
        alpha * teacher_ce + (1 - alpha) * true_ce, rel=1e-6
    )


def test_known_values_and_limits():
    # alpha=1: CE against the teacher's labels [1, 0] only; the true labels do not matter
    assert _loss(HardKDConfig(alpha=1.0)) == pytest.approx(
        float(F.cross_entropy(STUDENT, torch.tensor([1, 0])))
    )
    assert _loss(HardKDConfig(alpha=1.0)) == _loss(HardKDConfig(alpha=1.0), torch.tensor([0, 0]))
    assert _loss(HardKDConfig(alpha=1.0)) == pytest.approx(1.00587, abs=1e-4)  # (1.40761 + 0.60413) / 2
    # alpha=0 is exactly plain cross-entropy
    assert torch.equal(
        logit_loss(STUDENT, TEACHER, LABELS, HardKDConfig(alpha=0.0).weights()),
        F.cross_entropy(STUDENT, LABELS),
    )
    # a student that already predicts the teacher's labels with confidence has near-zero loss
    assert float(logit_loss(TEACHER * 20, TEACHER, LABELS, HardKDConfig().weights())) < 1e-6


def test_the_student_learns_the_teachers_labels(trained_mlp, make_ctx, digits_splits):
    train, _, test = digits_splits
    # scrambled labels: with alpha=1 the teacher's argmax is the only signal
    scrambled = Split.of(
        train.x, train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))], 10
    )
    seed_everything(1)
    student = MLP((1, 8, 8), 10, hidden=(32,))
    teacher_state = copy.deepcopy(trained_mlp.state_dict())
    teacher_pred = predict(trained_mlp, test.x).argmax(1)
    before = float((predict(student, test.x).argmax(1) == teacher_pred).float().mean())
    ctx = make_ctx(epochs=5, lr=1e-2, teacher=trained_mlp, train=scrambled)
    out = plugin.apply(student, HardKDConfig(alpha=1.0), ctx)
    after = float((predict(out, test.x).argmax(1) == teacher_pred).float().mean())
    assert out is student
    assert before < 0.3 and after >= 0.88
    assert [h.epoch for h in ctx.history] == [1, 2, 3, 4, 5]
    assert all(torch.equal(v, teacher_state[k]) for k, v in trained_mlp.state_dict().items())


def test_missing_teacher_is_a_config_error(make_ctx):
    with pytest.raises(ConfigError) as info:
        plugin.apply(MLP((1, 8, 8), 10, hidden=(8,)), HardKDConfig(), make_ctx(epochs=1))
    assert str(info.value) == "teacher=None is invalid: expected a teacher model for distillation"


def test_plugin_is_registered_with_its_defaults():
    assert plugins.load(plugins.DISTILLERS, "hard_kd") is plugin
    cfg = plugin.config({})
    assert cfg == HardKDConfig(alpha=1.0)
    assert HardKDConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 1.5}, "alpha=1.5 is invalid: expected a number with 0.0 <= alpha <= 1.0"),
        ({"alpha": -0.1}, "alpha=-0.1 is invalid: expected a number with 0.0 <= alpha <= 1.0"),
        ({"alpha": "high"}, "alpha='high' is invalid: expected a number with 0.0 <= alpha <= 1.0"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        HardKDConfig(**options)
    assert str(info.value) == message


def test_stage_errors_carry_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^distill\.options\.hard_kd\.alpha=2 is invalid"):
        DistillStage(method="hard_kd", options={"hard_kd": {"alpha": 2}})
    with pytest.raises(
        ConfigError, match=r"^distill\.options\.hard_kd\.temperature=4 is invalid.*\['alpha'\]"
    ):
        DistillStage(method="hard_kd", options={"hard_kd": {"temperature": 4}})
