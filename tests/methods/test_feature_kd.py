"""FitNets hints: adapter shapes, the loss against a direct computation, hooks, layer errors, learning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.method import Context
from shrinkflow.core.models import MLP, LeNet5, SeedCNN
from shrinkflow.core.sparsity import frozen_zeros
from shrinkflow.core.training import predict, seed_everything
from shrinkflow.methods.distillation._losses import Hints
from shrinkflow.methods.distillation.feature_kd import FeatureKDConfig, plugin
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, kd_loss
from shrinkflow.stages import DistillStage

X = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _adapter(student: nn.Module, teacher: nn.Module, s_layer=None, t_layer=None) -> nn.Module:
    with Hints(student, teacher, s_layer, t_layer, X[:2]) as hints:
        return hints.adapter


def _hidden(model: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last layer (its last hidden representation)."""
    for layer in list(model)[:-1]:
        x = layer(x)
    return x


def _one_step_loss(student, teacher, cfg) -> tuple[float, Context]:
    """Run the plugin with a ``fit`` that evaluates its loss once on X and records it."""
    seen: dict[str, float] = {}

    def fit(model, loss_fn, label, **kwargs):
        seen["loss"] = loss_fn(model(X), X, torch.arange(4)).item()
        seen["model"] = model
        return []

    ctx = Context(
        Split.of(X, torch.arange(4), 10), Split.of(X, torch.arange(4), 10), fit=fit, teacher=teacher
    )
    plugin.apply(student, cfg, ctx)
    return seen["loss"], seen["model"]


def test_default_layers_are_the_inputs_of_the_last_linear():
    seed_everything(0)
    adapter = _adapter(MLP((1, 8, 8), 10, hidden=(16,)), MLP((1, 8, 8), 10, hidden=(64, 48)))
    linear = adapter[1]
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (16, 48)
    # LeNet5's last hidden layer has 84 units, SeedCNN's has 128
    linear = _adapter(LeNet5((1, 8, 8), 10), SeedCNN((1, 8, 8), 10))[1]
    assert (linear.in_features, linear.out_features) == (84, 128)


def test_named_layers_and_conv_adapters():
    student, teacher = LeNet5((1, 8, 8), 10), SeedCNN((1, 8, 8), 10)
    # conv maps of the same size: a 1x1 convolution 6 -> 16 channels
    conv = _adapter(student, teacher, "features.1", "features.1")
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (16, 6, 1, 1)
    # student map 6x4x4 (after pooling), teacher map 16x8x8: 1x1 conv, then pooled to 8x8
    seq = _adapter(student, teacher, "features.2", "features.0")
    assert seq[0].weight.shape == (16, 6, 1, 1) and seq[1].output_size == (8, 8)
    assert seq(torch.zeros(3, 6, 4, 4)).shape == (3, 16, 8, 8)
    # conv map against a vector: flattened, then Linear (32*2*2 = 128 -> 84)
    lin = _adapter(SeedCNN((1, 8, 8), 10), LeNet5((1, 8, 8), 10), "features.6", "classifier.3")
    assert (lin[1].in_features, lin[1].out_features) == (128, 84)


def test_hint_loss_is_the_mse_of_the_adapted_features():
    seed_everything(0)
    student, teacher = MLP((1, 8, 8), 10, hidden=(16,)), MLP((1, 8, 8), 10, hidden=(24,))
    with Hints(student, teacher, None, None, X[:2]) as hints, torch.no_grad():
        student(X), teacher(X)
        expected = F.mse_loss(hints.adapter(_hidden(student, X)), _hidden(teacher, X))
        assert float(hints.loss()) == pytest.approx(float(expected), rel=1e-6)
        nn.init.zeros_(hints.adapter[1].weight), nn.init.zeros_(hints.adapter[1].bias)
        assert hints.loss().item() == pytest.approx(float(_hidden(teacher, X).pow(2).mean()), rel=1e-6)
    # the hooks are gone after the block
    assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])


@pytest.mark.parametrize(("beta", "t", "alpha"), [(1.0, 4.0, 0.7), (0.25, 2.0, 1.0), (3.0, 1.0, 0.0)])
def test_the_stage_loss_is_beta_hint_plus_soft_kd(beta, t, alpha):
    seed_everything(0)
    student, teacher = MLP((1, 8, 8), 10, hidden=(16,)), MLP((1, 8, 8), 10, hidden=(24,))
    loss, trained = _one_step_loss(student, teacher, FeatureKDConfig(beta=beta, temperature=t, alpha=alpha))
    adapter = trained.adapter  # the model handed to fit carries the adapter, so it is trained too
    assert trained.student is student and {n for n, _ in trained.named_parameters()} >= {"adapter.1.weight"}
    with torch.no_grad():
        hint = F.mse_loss(adapter(_hidden(student, X)), _hidden(teacher, X))
        kd = kd_loss(student(X), teacher(X), torch.arange(4), SoftKDConfig(temperature=t, alpha=alpha))
    assert loss == pytest.approx(float(beta * hint + kd), rel=1e-5)


def test_the_saved_student_holds_no_adapter_and_no_hooks(trained_mlp, make_ctx):
    seed_everything(0)
    student = MLP((1, 8, 8), 10, hidden=(16,))
    keys = list(student.state_dict())
    out = plugin.apply(student, FeatureKDConfig(), make_ctx(epochs=1, teacher=trained_mlp))
    assert out is student and list(out.state_dict()) == keys
    assert not any(m._forward_hooks for m in [*out.modules(), *trained_mlp.modules()])


def test_pruned_zeros_stay_zero(trained_mlp, make_ctx):
    seed_everything(0)
    student = MLP((1, 8, 8), 10, hidden=(32,))
    with torch.no_grad():
        student[1].weight[:, ::2] = 0.0
    with frozen_zeros(student):
        plugin.apply(student, FeatureKDConfig(), make_ctx(epochs=2, teacher=trained_mlp))
    assert (
        int((student[1].weight == 0).sum()) == 32 * 32 and float(student[1].weight.detach().abs().sum()) > 0
    )


def test_the_student_learns_from_the_teacher(trained_mlp, make_ctx, digits_splits):
    train, _, test = digits_splits
    scrambled = Split.of(
        train.x, train.y[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))], 10
    )
    seed_everything(1)
    student = MLP((1, 8, 8), 10, hidden=(32,))
    teacher_state = copy.deepcopy(trained_mlp.state_dict())
    teacher_pred = predict(trained_mlp, test.x).argmax(1)
    ctx = make_ctx(epochs=5, lr=1e-2, teacher=trained_mlp, train=scrambled)
    plugin.apply(student, FeatureKDConfig(alpha=1.0, beta=0.5), ctx)
    agreement = float((predict(student, test.x).argmax(1) == teacher_pred).float().mean())
    assert agreement >= 0.85
    assert all(torch.equal(v, teacher_state[k]) for k, v in trained_mlp.state_dict().items())


def test_unknown_layers_fail_listing_the_module_names(trained_mlp, make_ctx):
    student = MLP((1, 8, 8), 10, hidden=(8,))
    with pytest.raises(ConfigError) as info:
        plugin.apply(student, FeatureKDConfig(student_layer="fc1"), make_ctx(teacher=trained_mlp))
    assert str(info.value) == (
        "student_layer='fc1' is invalid: expected a module name of the student; available: ['0', '1', '2', '3']"
    )
    with pytest.raises(
        ConfigError, match=r"^teacher_layer='features.0' is invalid: .*teacher; available: \['0'"
    ):
        plugin.apply(student, FeatureKDConfig(teacher_layer="features.0"), make_ctx(teacher=trained_mlp))
    no_linear = nn.Sequential(nn.Conv2d(1, 10, 8), nn.Flatten())
    with pytest.raises(ConfigError, match=r"^student_layer=None is invalid: .*has no nn.Linear"):
        plugin.apply(no_linear, FeatureKDConfig(), make_ctx(teacher=trained_mlp))
    assert not any(m._forward_hooks for m in trained_mlp.modules())


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.spare = MLP((1, 8, 8), 10, hidden=(8,)), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_a_layer_the_forward_pass_skips_fails_and_leaves_no_hooks(trained_mlp, make_ctx):
    student = _Unused()
    with pytest.raises(ConfigError) as info:
        plugin.apply(student, FeatureKDConfig(student_layer="spare"), make_ctx(teacher=trained_mlp))
    assert (
        str(info.value)
        == "student_layer='spare' is invalid: expected a module the student's forward pass runs"
    )
    assert not any(m._forward_hooks for m in [*student.modules(), *trained_mlp.modules()])


def test_defaults_and_round_trip():
    cfg = plugin.config({})
    assert cfg == FeatureKDConfig(
        student_layer=None, teacher_layer=None, beta=1.0, temperature=4.0, alpha=0.7
    )
    named = FeatureKDConfig(student_layer="1", teacher_layer="classifier.3")
    assert FeatureKDConfig.from_dict(named.to_dict()) == named


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beta": 0}, "beta=0 is invalid: expected a number with 0.0 < beta <= 1000.0"),
        ({"temperature": -1}, "temperature=-1 is invalid: expected a number with 0.0 < temperature <= 100.0"),
        ({"alpha": 2}, "alpha=2 is invalid: expected a number with 0.0 <= alpha <= 1.0"),
        (
            {"student_layer": ""},
            "student_layer='' is invalid: expected a module name (e.g. 'classifier.2') or null",
        ),
        (
            {"teacher_layer": 3},
            "teacher_layer=3 is invalid: expected a module name (e.g. 'classifier.2') or null",
        ),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        FeatureKDConfig(**options)
    assert str(info.value).startswith(message)


def test_stage_errors_carry_the_dotted_key():
    with pytest.raises(ConfigError, match=r"^distill\.options\.feature_kd\.beta=-1 is invalid"):
        DistillStage(method="feature_kd", options={"feature_kd": {"beta": -1}})
