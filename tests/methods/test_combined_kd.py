"""Combined distillation: each term against a hand computation, equivalences, weights' errors, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.method import Context
from shrinkflow.core.models import MLP
from shrinkflow.core.training import predict, seed_everything
from shrinkflow.methods.distillation._losses import logit_loss
from shrinkflow.methods.distillation.combined_kd import CombinedKDConfig, plugin
from shrinkflow.methods.distillation.feature_kd import FeatureKDConfig
from shrinkflow.methods.distillation.feature_kd import plugin as feature_plugin
from shrinkflow.methods.distillation.hard_kd import HardKDConfig
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, kd_loss
from shrinkflow.stages import DistillStage

STUDENT = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
TEACHER = torch.tensor([[0.0, 4.0, 1.0], [2.0, 0.0, -2.0]])  # argmax: [1, 0]
LABELS = torch.tensor([2, 1])
X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _softmax(row: list[float], t: float) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _by_hand(w_ce: float, w_soft: float, w_hard: float, t: float) -> float:
    total = 0.0
    for s_row, t_row, label in zip(STUDENT.tolist(), TEACHER.tolist(), LABELS.tolist(), strict=True):
        p_s, p_t, p_1 = _softmax(s_row, t), _softmax(t_row, t), _softmax(s_row, 1.0)
        kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))
        hard_label = max(range(3), key=lambda i: t_row[i])
        total += w_ce * -math.log(p_1[label]) + w_soft * t * t * kl + w_hard * -math.log(p_1[hard_label])
    return total / len(LABELS)


def _loss(**kw) -> float:
    return float(logit_loss(STUDENT, TEACHER, LABELS, CombinedKDConfig(w_feature=0.0, **kw).weights()))


@pytest.mark.parametrize(
    ("w_ce", "w_soft", "w_hard", "t"),
    [(1, 0, 0, 4), (0, 1, 0, 4), (0, 0, 1, 4), (0.2, 0.5, 0.3, 3), (2, 1, 0.5, 10)],
)
def test_logit_terms_match_a_hand_computation(w_ce, w_soft, w_hard, t):
    got = _loss(w_ce=w_ce, w_soft=w_soft, w_hard=w_hard, temperature=t)
    assert got == pytest.approx(_by_hand(w_ce, w_soft, w_hard, t), rel=1e-5)


def test_known_values():
    # CE on the true labels [2, 1] is (0.40761 + 2.10413) / 2; on the teacher's [1, 0], (1.40761 + 0.60413) / 2
    assert _loss(w_ce=1.0, w_soft=0.0) == pytest.approx(1.25587, abs=1e-4)
    assert _loss(w_ce=0.0, w_soft=0.0, w_hard=1.0) == pytest.approx(1.00587, abs=1e-4)
    assert _loss(w_ce=0.5, w_soft=0.0, w_hard=0.5) == pytest.approx(1.13087, abs=1e-4)


def test_it_generalizes_soft_and_hard_kd():
    for alpha in (0.0, 0.3, 1.0):
        soft = kd_loss(STUDENT, TEACHER, LABELS, SoftKDConfig(temperature=2.0, alpha=alpha))
        assert _loss(w_ce=1 - alpha, w_soft=alpha, temperature=2.0) == pytest.approx(float(soft), rel=1e-6)
        hard = logit_loss(STUDENT, TEACHER, LABELS, HardKDConfig(alpha=alpha).weights())
        assert _loss(w_ce=1 - alpha, w_soft=0.0, w_hard=alpha) == pytest.approx(float(hard), rel=1e-6)


def _one_step_loss(method, student, teacher, cfg) -> float:
    seen: dict[str, float] = {}

    def fit(model, loss_fn, label, **kwargs):
        seen["loss"] = loss_fn(model(X), X, torch.arange(4)).item()
        return []

    split = Split.of(X, torch.arange(4), 10)
    method.apply(student, cfg, Context(split, split, fit=fit, teacher=teacher))
    return seen["loss"]


def test_the_feature_term_is_feature_kds_hint():
    # same seed, same adapter initialisation: combined(w_ce=1-a, w_soft=a, w_feature=b) == feature_kd(alpha=a, beta=b)
    losses = []
    for method, cfg in [
        (plugin, CombinedKDConfig(w_ce=0.4, w_soft=0.6, w_hard=0.0, w_feature=2.0, temperature=3.0)),
        (feature_plugin, FeatureKDConfig(alpha=0.6, beta=2.0, temperature=3.0)),
    ]:
        seed_everything(0)
        student, teacher = MLP((1, 8, 8), 10, hidden=(16,)), MLP((1, 8, 8), 10, hidden=(24,))
        losses.append(_one_step_loss(method, student, teacher, cfg))
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # and the feature term alone is a positive MSE, without the logit terms
    seed_everything(0)
    student, teacher = MLP((1, 8, 8), 10, hidden=(16,)), MLP((1, 8, 8), 10, hidden=(24,))
    only = _one_step_loss(plugin, student, teacher, CombinedKDConfig(w_ce=0, w_soft=0, w_feature=1.0))
    assert 0.0 < only < losses[0]


def test_the_student_learns_the_teachers_labels(trained_mlp, make_ctx, digits_splits):
    train, _, test = digits_splits
    scrambled = Split.of(
        train.x, train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))], 10
    )
    seed_everything(1)
    student = MLP((1, 8, 8), 10, hidden=(32,))
    teacher_pred = predict(trained_mlp, test.x).argmax(1)
    cfg = CombinedKDConfig(w_ce=0.0, w_soft=0.5, w_hard=0.5, w_feature=0.5)
    out = plugin.apply(student, cfg, make_ctx(epochs=5, lr=1e-2, teacher=trained_mlp, train=scrambled))
    agreement = float((predict(out, test.x).argmax(1) == teacher_pred).float().mean())
    assert out is student and agreement >= 0.85


def test_defaults_and_registration():
    assert plugins.load(plugins.DISTILLERS, "combined_kd") is plugin
    cfg = plugin.config({})
    assert cfg == CombinedKDConfig(w_ce=0.3, w_soft=0.7, w_hard=0.0, w_feature=0.5, temperature=4.0)
    assert CombinedKDConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"w_ce": -0.1}, "w_ce=-0.1 is invalid: expected a number with 0.0 <= w_ce <= 1000.0"),
        ({"w_hard": "x"}, "w_hard='x' is invalid: expected a number with 0.0 <= w_hard <= 1000.0"),
        (
            {"w_ce": 0, "w_soft": 0, "w_hard": 0, "w_feature": 0},
            "w_ce/w_soft/w_hard/w_feature=[0, 0, 0, 0] is invalid: expected at least one weight > 0",
        ),
        ({"temperature": 0}, "temperature=0 is invalid: expected a number with 0.0 < temperature <= 100.0"),
        ({"student_layer": ""}, "student_layer='' is invalid: expected a module name"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        CombinedKDConfig(**options)
    assert str(info.value).startswith(message)


def test_stage_errors_carry_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^distill\.options\.combined_kd\.w_soft=-1 is invalid"):
        DistillStage(method="combined_kd", options={"combined_kd": {"w_soft": -1}})
    with pytest.raises(ConfigError, match=r"^distill\.options\.combined_kd\.w_ce/w_soft/w_hard/w_feature="):
        DistillStage(
            method="combined_kd",
            options={"combined_kd": {"w_ce": 0, "w_soft": 0, "w_hard": 0, "w_feature": 0}},
        )


def test_cross_entropy_alone_ignores_the_teacher():
    assert torch.equal(
        logit_loss(STUDENT, TEACHER, LABELS, CombinedKDConfig(w_ce=1, w_soft=0, w_feature=0).weights()),
        F.cross_entropy(STUDENT, LABELS),
    )
