"""Self-validating configs: error messages, range/choice checks, nested prefixes, dict round-trips."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range, nested
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig
from shrinkflow.methods.pruning.magnitude import MagnitudeConfig
from shrinkflow.methods.quantization.dynamic_int8 import DynamicInt8Config
from shrinkflow.stages import DataStage, DistillStage, PruneStage, QuantizeStage, TeacherStage

TRAIN_KEYS = ["epochs", "batch_size", "lr", "weight_decay", "optimizer", "lr_schedule"]


@dataclass
class Inner(Config):
    n: int = 1

    def __post_init__(self) -> None:
        check_range("n", self.n, 0, 5, integer=True)


@dataclass
class Outer(Config):
    name: str = "a"
    inner: Inner | dict[str, Any] = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    table: dict[str, Any] = field(default_factory=lambda: {"k": (3, 4)})
    derived: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.inner = nested(Inner, self.inner, "inner")
        check_choice("name", self.name, ["a", "b"])


# --- ConfigError -------------------------------------------------------------------------------


def test_config_error_names_key_value_and_expectation():
    err = ConfigError("prune.options.magnitude.sparsity", 1.5, "a number with 0.0 <= sparsity < 1.0")
    assert isinstance(err, ValueError)
    assert (err.key, err.value, err.expected) == (
        "prune.options.magnitude.sparsity",
        1.5,
        "a number with 0.0 <= sparsity < 1.0",
    )
    assert str(err) == (
        "prune.options.magnitude.sparsity=1.5 is invalid: expected a number with 0.0 <= sparsity < 1.0"
    )


def test_config_error_shows_the_value_with_repr():
    assert str(ConfigError("optimizer", "rmsprop", "x")) == "optimizer='rmsprop' is invalid: expected x"
    assert str(ConfigError("exclude", ["a"], "x")) == "exclude=['a'] is invalid: expected x"


def test_under_prefixes_the_key_and_keeps_value_and_expectation():
    err = ConfigError("epochs", -1, "an integer")
    moved = err.under("finetune")
    assert moved is not err and err.key == "epochs"  # the original is untouched
    assert (moved.key, moved.value, moved.expected) == ("finetune.epochs", -1, "an integer")
    assert str(moved) == "finetune.epochs=-1 is invalid: expected an integer"
    assert moved.under("prune").key == "prune.finetune.epochs"
    assert err.under("").key == "epochs"  # an empty prefix adds no dot


# --- check_range -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 1, 1.0])
def test_closed_bounds_accept_both_ends(value):
    assert check_range("x", value, 0.0, 1.0) is value


@pytest.mark.parametrize("value", [-1e-9, 1.000001, -5, 7])
def test_closed_bounds_reject_values_outside(value):
    with pytest.raises(ConfigError) as info:
        check_range("x", value, 0.0, 1.0)
    assert info.value.key == "x" and info.value.value == value
    assert info.value.expected == "a number with 0.0 <= x <= 1.0"


def test_open_low_bound_excludes_only_the_bound():
    assert check_range("lr", 1e-12, 0.0, 10.0, low_open=True) == 1e-12
    assert check_range("lr", 10.0, 0.0, 10.0, low_open=True) == 10.0
    with pytest.raises(ConfigError) as info:
        check_range("lr", 0.0, 0.0, 10.0, low_open=True)
    assert str(info.value) == "lr=0.0 is invalid: expected a number with 0.0 < lr <= 10.0"


def test_open_high_bound_excludes_only_the_bound():
    assert check_range("sparsity", 0.0, 0.0, 1.0, high_open=True) == 0.0
    assert check_range("sparsity", 0.999999, 0.0, 1.0, high_open=True) == 0.999999
    with pytest.raises(ConfigError) as info:
        check_range("sparsity", 1.0, 0.0, 1.0, high_open=True)
    assert str(info.value) == "sparsity=1.0 is invalid: expected a number with 0.0 <= sparsity < 1.0"


def test_both_bounds_open():
    with pytest.raises(ConfigError, match=r"expected a number with 0 < f < 1$"):
        check_range("f", 1, 0, 1, low_open=True, high_open=True)
    with pytest.raises(ConfigError, match=r"expected a number with 0 < f < 1$"):
        check_range("f", 0, 0, 1, low_open=True, high_open=True)


def test_one_sided_and_unbounded_ranges():
    assert check_range("x", 1e300, 0) == 1e300
    assert check_range("x", -1e300, high=0) == -1e300
    assert check_range("x", -3) == -3
    with pytest.raises(ConfigError, match=r"expected a number with 0 <= x$"):
        check_range("x", -1, 0)
    with pytest.raises(ConfigError, match=r"expected a number with x <= 0$"):
        check_range("x", 1, high=0)
    with pytest.raises(ConfigError, match=r"expected a number$"):
        check_range("x", "3")


@pytest.mark.parametrize("value", [True, False])
def test_booleans_are_not_numbers(value):
    # True == 1 and False == 0 are inside [0, 1], but a YAML `yes` is not a sparsity
    with pytest.raises(ConfigError) as info:
        check_range("x", value, 0, 1)
    assert info.value.value is value


@pytest.mark.parametrize("bounds", [(None, None), (0.0, 1.0), (0.0, None)])
def test_nan_is_rejected_with_or_without_bounds(bounds):
    with pytest.raises(ConfigError, match=r"^x=nan is invalid"):
        check_range("x", math.nan, *bounds)


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_infinities_are_outside_a_bounded_range(value):
    with pytest.raises(ConfigError):
        check_range("x", value, 0.0, 1e9)


@pytest.mark.parametrize("value", ["1", None, [1], {"a": 1}, 1j])
def test_non_numbers_are_rejected(value):
    with pytest.raises(ConfigError) as info:
        check_range("x", value, 0, 10)
    assert info.value.value == value


def test_integer_ranges_accept_ints_and_reject_floats():
    assert check_range("epochs", 0, 0, 10, integer=True) == 0
    assert check_range("epochs", 10, 0, 10, integer=True) == 10
    with pytest.raises(ConfigError) as info:
        check_range("epochs", 3.0, 0, 10, integer=True)  # integral float: still not an int
    assert str(info.value) == "epochs=3.0 is invalid: expected an integer with 0 <= epochs <= 10"
    with pytest.raises(ConfigError, match="expected an integer with 0 <= epochs <= 10"):
        check_range("epochs", 11, 0, 10, integer=True)
    with pytest.raises(ConfigError, match=r"expected an integer$"):
        check_range("epochs", 2.5, integer=True)


def test_expected_text_names_the_last_part_of_a_dotted_key():
    with pytest.raises(ConfigError) as info:
        check_range("train.finetune.lr", 0.0, 0.0, 10.0, low_open=True)
    assert info.value.key == "train.finetune.lr"
    assert info.value.expected == "a number with 0.0 < lr <= 10.0"


def test_a_huge_integer_is_a_config_error_not_a_crash():
    with pytest.raises(ConfigError, match="epochs"):
        check_range("epochs", 10**400, 0, 10_000, integer=True)


# --- check_choice ------------------------------------------------------------------------------


def test_check_choice_returns_valid_values():
    assert check_choice("optimizer", "sgd", ["adam", "sgd"]) == "sgd"
    assert check_choice("n", 2, (1, 2, 3)) == 2


def test_check_choice_lists_the_choices_as_a_list():
    with pytest.raises(ConfigError) as info:
        check_choice("optimizer", "rmsprop", ("adam", "sgd"))
    assert (info.value.key, info.value.value) == ("optimizer", "rmsprop")
    assert str(info.value) == "optimizer='rmsprop' is invalid: expected one of ['adam', 'sgd']"


def test_check_choice_is_case_sensitive():
    with pytest.raises(ConfigError):
        check_choice("optimizer", "Adam", ["adam", "sgd"])


# --- nested --------------------------------------------------------------------------------------


def test_nested_passes_an_instance_through_unchanged():
    cfg = TrainConfig(epochs=3)
    assert nested(TrainConfig, cfg, "finetune") is cfg


def test_nested_builds_from_a_mapping_or_none():
    assert nested(TrainConfig, {"epochs": 3, "lr": 0.1}, "finetune") == TrainConfig(epochs=3, lr=0.1)
    assert nested(TrainConfig, None, "finetune") == TrainConfig()
    assert nested(TrainConfig, {}, "finetune") == TrainConfig()


def test_nested_prefixes_field_errors_with_its_key():
    with pytest.raises(ConfigError) as info:
        nested(TrainConfig, {"epochs": -1}, "finetune")
    assert info.value.key == "finetune.epochs" and info.value.value == -1
    assert str(info.value) == "finetune.epochs=-1 is invalid: expected an integer with 0 <= epochs <= 10000"


def test_nested_prefixes_unknown_keys_with_its_key():
    with pytest.raises(ConfigError) as info:
        nested(TrainConfig, {"epoch": 3}, "finetune")
    assert info.value.key == "finetune.epoch" and info.value.value == 3
    assert info.value.expected == f"one of the keys {TRAIN_KEYS}"


@pytest.mark.parametrize("value", [3, "fast", [1, 2]])
def test_nested_rejects_a_non_mapping(value):
    with pytest.raises(ConfigError) as info:
        nested(TrainConfig, value, "finetune")
    assert info.value.key == "finetune" and info.value.value == value
    assert info.value.expected == "a mapping of TrainConfig fields"


def test_nested_configs_prefix_through_two_levels():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"inner": {"n": 9}}, key="stage")
    assert info.value.key == "stage.inner.n"
    assert str(info.value) == "stage.inner.n=9 is invalid: expected an integer with 0 <= n <= 5"


@pytest.mark.parametrize(
    ("build", "key", "value"),
    [
        (lambda: PruneStage(finetune={"epochs": -1}), "prune.finetune.epochs", -1),
        (lambda: TeacherStage(train={"lr": 0}), "train_teacher.train.lr", 0),
        (lambda: TeacherStage(model={"name": "mlp", "kwarg": {}}), "train_teacher.model.kwarg", {}),
        (
            lambda: PruneStage(method="magnitude", options={"magnitude": {"sparsity": 1.0}}),
            "prune.options.magnitude.sparsity",
            1.0,
        ),
        (lambda: DistillStage(train={"optimizer": "rmsprop"}), "distill.train.optimizer", "rmsprop"),
        (lambda: DataStage(val_fraction=0.0), "data.val_fraction", 0.0),
        (lambda: QuantizeStage(method="int4"), "quantize.method", "int4"),
    ],
)
def test_stage_configs_report_the_full_dotted_key(build, key, value):
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.key == key and info.value.value == value


# --- Config.from_dict / to_dict ------------------------------------------------------------------


def test_from_dict_rejects_unknown_keys_listing_the_known_ones():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"epochs": 2, "learning_rate": 0.1})
    assert info.value.key == "learning_rate" and info.value.value == 0.1
    assert str(info.value) == (f"learning_rate=0.1 is invalid: expected one of the keys {TRAIN_KEYS}")


def test_from_dict_with_a_key_prefixes_errors():
    with pytest.raises(ConfigError, match=r"^train\.batch_size=0 is invalid"):
        TrainConfig.from_dict({"batch_size": 0}, key="train")
    with pytest.raises(ConfigError, match=r"^train\.bogus=1 is invalid"):
        TrainConfig.from_dict({"bogus": 1}, key="train")


def test_from_dict_of_none_or_empty_gives_the_defaults():
    assert TrainConfig.from_dict(None) == TrainConfig()
    assert TrainConfig.from_dict({}) == TrainConfig()


def test_from_dict_does_not_accept_non_init_fields():
    assert Outer.field_names() == ["name", "inner", "sizes", "table"]
    with pytest.raises(ConfigError, match="one of the keys"):
        Outer.from_dict({"derived": 3})


def test_from_dict_does_not_mutate_its_input():
    data = {"epochs": 2}
    TrainConfig.from_dict(data)
    assert data == {"epochs": 2}


def test_to_dict_is_plain_nested_and_json_serialisable():
    out = Outer(inner={"n": 4}).to_dict()
    assert out == {"name": "a", "inner": {"n": 4}, "sizes": [1, 2], "table": {"k": [3, 4]}}
    assert isinstance(out["inner"], dict) and isinstance(out["sizes"], list)
    assert "derived" not in out
    assert json.loads(json.dumps(out)) == out
    rebuilt = Outer.from_dict(out)
    assert rebuilt.inner == Inner(4) and rebuilt.to_dict() == out


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(
            epochs=3, batch_size=16, lr=0.5, weight_decay=0.01, optimizer="sgd", lr_schedule="constant"
        ),
        MagnitudeConfig(sparsity=0.9, scope="layer", exclude=["3"]),
        DynamicInt8Config(modules=("Linear", "LSTM")),
        SoftKDConfig(temperature=2.0, alpha=0.0),
        ModelSpec("mlp", {"hidden": [32, 16], "dropout": 0.1}),
        DataStage(val_fraction=0.1, test_fraction=0.3),
        TeacherStage(model={"name": "lenet5"}, train={"epochs": 1}),
        PruneStage(method="magnitude", options={"magnitude": {"sparsity": 0.3}}, finetune={"epochs": 2}),
        QuantizeStage(method="dynamic_int8"),
        DistillStage(method="soft_kd", student={"name": "mlp", "kwargs": {"mlp": {"hidden": [8]}}}),
    ],
    ids=lambda c: type(c).__name__,
)
def test_real_configs_round_trip_through_plain_dicts(cfg):
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data  # plain types only
    again = type(cfg).from_dict(data)
    assert again == cfg
    assert again.to_dict() == data
