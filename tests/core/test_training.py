"""Training and evaluation: learning, bit-exact determinism, exact accuracy, loss guards, config checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.models import MLP
from shrinkflow.core.training import EpochLog, TrainConfig, evaluate, fit, listen, predict, seed_everything

FAST = TrainConfig(epochs=3, batch_size=16, lr=1e-2, lr_schedule="constant")


@pytest.fixture
def small(digits_splits) -> Split:
    return digits_splits[0].subset(300)


def _trained(seed: int, data: Split, cfg: TrainConfig = FAST) -> tuple[nn.Module, list[EpochLog]]:
    seed_everything(seed)
    model = MLP((1, 8, 8), 10, hidden=(64,))
    return model, fit(model, data, cfg)


def test_fit_learns_a_small_digits_subset(small, digits_splits):
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(64,))
    before_acc, before_loss = evaluate(model, small)
    history = fit(model, small, FAST, val=digits_splits[1])
    after_acc, after_loss = evaluate(model, small)
    assert before_acc < 0.3 and before_loss > 2.0  # chance level, ~ln(10)
    assert after_acc > 0.9 and after_loss < 0.5 * before_loss
    assert [h.epoch for h in history] == [1, 2, 3]
    assert history[0].loss > history[1].loss > history[2].loss
    assert history[-1].train_accuracy > history[0].train_accuracy
    assert all(h.val_accuracy is not None and 0.0 <= h.val_accuracy <= 1.0 for h in history)
    assert history[-1].val_accuracy == evaluate(model, digits_splits[1])[0] > 0.8
    assert not model.training  # fit leaves the model in eval mode


def test_sgd_and_cosine_schedule_also_learn(small):
    model, history = _trained(0, small, TrainConfig(epochs=5, batch_size=16, lr=0.05, optimizer="sgd"))
    assert history[-1].loss < 0.4 * history[0].loss
    assert evaluate(model, small)[0] > 0.9
    assert all(h.val_accuracy is None for h in history)  # no val split given


def test_same_seed_gives_bit_identical_weights_and_history(small):
    a, history_a = _trained(123, small)
    b, history_b = _trained(123, small)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [vars(h) for h in history_a] == [vars(h) for h in history_b]


def test_another_seed_gives_other_weights(small):
    a, _ = _trained(1, small)
    b, _ = _trained(2, small)
    assert not torch.equal(a.state_dict()["1.weight"], b.state_dict()["1.weight"])


def test_shuffling_depends_on_the_seed_not_only_the_init(small):
    # same initial weights, different global RNG state before fit: different batches, other result
    seed_everything(5)
    a = MLP((1, 8, 8), 10, hidden=(64,))
    b = MLP((1, 8, 8), 10, hidden=(64,))
    b.load_state_dict(a.state_dict())
    torch.manual_seed(10)
    fit(a, small, FAST)
    torch.manual_seed(11)
    fit(b, small, FAST)
    assert not torch.equal(a.state_dict()["1.weight"], b.state_dict()["1.weight"])


def test_zero_epochs_changes_nothing(small):
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert fit(model, small, TrainConfig(epochs=0)) == []
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_custom_loss_receives_logits_inputs_and_labels(small):
    seen: list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = []

    def loss_fn(logits, x, y):
        seen.append((tuple(logits.shape), tuple(x.shape), tuple(y.shape)))
        return F.cross_entropy(logits, y)

    seed_everything(0)
    fit(
        MLP((1, 8, 8), 10, hidden=(8,)),
        small.subset(40),
        TrainConfig(epochs=1, batch_size=16),
        loss_fn=loss_fn,
    )
    assert seen == [
        ((16, 10), (16, 1, 8, 8), (16,)),
        ((16, 10), (16, 1, 8, 8), (16,)),
        ((8, 10), (8, 1, 8, 8), (8,)),
    ]


def test_a_nan_loss_stops_training_with_a_clear_error(small):
    x = small.x.clone()
    x[:, 0, 0, 0] = math.nan  # NaN images would be refused by check_source; fit itself must still stop
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(8,))
    with pytest.raises(
        FloatingPointError,
        match=r"^teacher: loss became nan at epoch 1; expected a finite loss \(lower lr=0\.01\?\)$",
    ):
        fit(model, Split.of(x, small.y, 10), TrainConfig(epochs=2, lr=0.01), label="teacher")


def test_an_infinite_loss_stops_training(small):
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match=r"^train: loss became inf at epoch 1"):
        fit(model, small, TrainConfig(epochs=1), loss_fn=lambda logits, x, y: logits.abs().sum() * math.inf)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # no step taken


# --- evaluate / predict ---------------------------------------------------------------------------


class _Fixed(nn.Module):
    """Predicts class ``x[i, 0, 0, 0]`` for sample i."""

    def forward(self, x):
        return F.one_hot(x[:, 0, 0, 0].long(), 4).float() * 5.0


def test_evaluate_returns_the_exact_fraction_correct_and_the_mean_loss():
    predicted = torch.tensor([0, 1, 2, 3, 0, 1, 2])
    y = torch.tensor([0, 1, 2, 0, 1, 1, 3])  # 4 of 7 right
    x = predicted.float().view(7, 1, 1, 1).expand(7, 1, 2, 2).clone()
    data = Split.of(x, y, 4)
    accuracy, loss = evaluate(_Fixed(), data)
    assert accuracy == 4 / 7
    assert loss == pytest.approx(float(F.cross_entropy(_Fixed()(x), y)), rel=1e-6)
    assert evaluate(_Fixed(), data, batch_size=2) == (accuracy, pytest.approx(loss, rel=1e-6))


def test_predict_runs_in_eval_mode_without_gradients(small):
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, hidden=(32,), dropout=0.5).train()
    a = predict(model, small.x, batch_size=7)
    b = predict(model, small.x)
    assert not model.training and not a.requires_grad
    assert a.shape == (300, 10) and torch.allclose(a, b, atol=1e-6)  # dropout off: batches agree


# --- TrainConfig ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": -1}, "epochs=-1 is invalid: expected an integer with 0 <= epochs <= 10000"),
        ({"epochs": 2.5}, "epochs=2.5 is invalid: expected an integer with 0 <= epochs <= 10000"),
        ({"batch_size": 0}, "batch_size=0 is invalid: expected an integer with 1 <= batch_size <= 1000000"),
        ({"lr": 0}, "lr=0 is invalid: expected a number with 0.0 < lr <= 10.0"),
        ({"lr": -0.1}, "lr=-0.1 is invalid: expected a number with 0.0 < lr <= 10.0"),
        ({"lr": math.nan}, "lr=nan is invalid: expected a number with 0.0 < lr <= 10.0"),
        (
            {"weight_decay": -0.01},
            "weight_decay=-0.01 is invalid: expected a number with 0.0 <= weight_decay <= 1.0",
        ),
        (
            {"optimizer": "rmsprop"},
            "optimizer='rmsprop' is invalid: expected one of ['adam', 'adamw', 'sgd']",
        ),
        ({"lr_schedule": "step"}, "lr_schedule='step' is invalid: expected one of ['constant', 'cosine']"),
    ],
)
def test_train_config_rejects_bad_values_with_a_message(options, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**options)
    assert str(info.value) == message


def test_train_config_accepts_the_bounds():
    TrainConfig(epochs=0, batch_size=1, lr=10.0, weight_decay=1.0)
    TrainConfig(epochs=10_000, lr=1e-12, weight_decay=0.0)


def test_seed_everything_turns_on_deterministic_algorithms():
    seed_everything(0)
    assert torch.are_deterministic_algorithms_enabled()
    a = torch.rand(3)
    seed_everything(0)
    assert torch.equal(a, torch.rand(3))


def test_each_epoch_records_validation_loss_and_the_learning_rate_it_started_with(small, digits_splits):
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(64,))
    seen: list[tuple[str, EpochLog]] = []
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.01, lr_schedule="cosine")
    with listen(lambda label, entry: seen.append((label, entry))):
        history = fit(model, small, cfg, val=digits_splits[1], label="teacher")
    final = evaluate(model, digits_splits[1])
    fit(model, small, TrainConfig(epochs=1), label="after")  # the listener is gone
    assert [label for label, _ in seen] == ["teacher"] * 4
    assert [entry for _, entry in seen] == history
    steps = math.ceil(len(small) / 32)
    # cosine over 4 epochs of `steps` steps: the lr each epoch starts with
    expected = [0.01 * (1 + math.cos(math.pi * e * steps / (4 * steps))) / 2 for e in range(4)]
    assert [h.lr for h in history] == pytest.approx(expected)
    assert (history[-1].val_accuracy, history[-1].val_loss) == final
    assert history[0].val_loss > history[-1].val_loss > 0.0
