"""The recipe search engine: its configuration, the declared space, a real Optuna study on digits."""

from __future__ import annotations

import copy

import optuna
import pandas as pd
import pytest

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.datasets import digits
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, seed_everything
from shrinkflow.search import SearchConfig, apply, choose, run_recipe, run_search, sample
from shrinkflow.stages import DataStage, split

SPACE = {
    "prune.method": {"choices": ["magnitude", "agp"]},
    "prune.options.magnitude.sparsity": {"low": 0.5, "high": 0.9},
    "prune.options.agp.sparsity": {"low": 0.5, "high": 0.9},
    "quantize.method": {"choices": ["none", "weight_sharing"]},
    "quantize.options.weight_sharing.bits": {"low": 2, "high": 8},
}
PARAMS = {
    "prune": {"method": "magnitude", "finetune": {"epochs": 1, "batch_size": 64, "lr": 5e-4}},
    "distill": {"method": "none"},
    "quantize": {"method": "none"},
}
FAST = MeasureConfig(warmup=1, latency_runs=5, throughput_runs=2, noise_sigmas=[])


@pytest.fixture(scope="module")
def digits_splits() -> tuple[Split, Split, Split]:
    return split(digits(), DataStage(), seed=0)


@pytest.fixture(scope="module")
def teacher(digits_splits) -> ModelArtifact:
    train, val, _ = digits_splits
    seed_everything(0)
    artifact = ModelArtifact.build(ModelSpec("mlp", {"hidden": [64]}), train.input_shape, train.num_classes)
    fit(artifact.model, train, TrainConfig(epochs=10, lr=3e-3), val=val)
    return artifact


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"objectives": ["accuracy", "speed"]}, r"objectives\[1\]='speed' is invalid: expected one of"),
        ({"pruner": "median"}, r"pruner='median' is invalid: expected 'none' with several objectives"),
        (
            {"space": {"prune.sparsity": {"low": 0.9, "high": 0.5}}},
            r"space.prune.sparsity=.*numbers with low < high",
        ),
        (
            {"space": {"train_teacher.epochs": {"low": 1, "high": 5}}},
            r"space='train_teacher.epochs' is invalid",
        ),
        ({"space": {"distill.options.soft_kd.temperature": {"low": 0, "high": 4, "log": True}}}, r"low > 0"),
        ({"space": {"quantize.method": {"choices": []}}}, r"a non-empty list"),
        ({"storage": "study.db"}, r"storage='study.db' is invalid: expected null or a database URL"),
        ({"n_trials": 0}, r"n_trials=0 is invalid"),
    ],
)
def test_a_bad_search_configuration_names_the_key_and_what_was_expected(override, message):
    with pytest.raises(ConfigError, match=message):
        SearchConfig(**{"space": SPACE, **override})


def test_options_are_sampled_only_for_the_method_drawn():
    values = sample(
        optuna.trial.FixedTrial(
            {"prune.method": "agp", "prune.options.agp.sparsity": 0.8, "quantize.method": "none"}
        ),
        SPACE,
    )
    assert values == {"prune.method": "agp", "prune.options.agp.sparsity": 0.8, "quantize.method": "none"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        drawn = sample(study.ask(), SPACE)
        method = drawn["prune.method"]
        assert {k for k in drawn if k.startswith("prune.options.")} == {f"prune.options.{method}.sparsity"}
        assert isinstance(drawn.get("quantize.options.weight_sharing.bits", 2), int)


def test_apply_sets_dotted_keys_on_a_copy_and_refuses_to_descend_into_a_value():
    recipe = apply(PARAMS, {"prune.options.agp.sparsity": 0.8, "distill.method": "soft_kd"})
    assert (
        recipe["prune"]["options"] == {"agp": {"sparsity": 0.8}} and recipe["distill"]["method"] == "soft_kd"
    )
    assert "options" not in PARAMS["prune"]  # the base parameters are untouched
    with pytest.raises(
        ConfigError, match=r"prune.method.x=1 is invalid: expected a key whose parent 'method'"
    ):
        apply(PARAMS, {"prune.method.x": 1})


def test_a_recipe_runs_to_the_same_model_twice(teacher, digits_splits):
    train, val, test = digits_splits
    recipe = apply(PARAMS, {"prune.options.magnitude.sparsity": 0.8, "quantize.method": "weight_sharing"})
    first, progress = run_recipe(recipe, teacher, train, val, test, FAST, seed=7)
    second, _ = run_recipe(copy.deepcopy(recipe), teacher, train, val, test, FAST, seed=7)
    for key in ("accuracy", "packed_bytes", "artifact_bytes", "sparsity", "teacher_agreement"):
        assert first[key] == second[key], key
    assert first["sparsity"] == pytest.approx(0.8, abs=0.02)  # of all parameters: biases stay dense
    assert 0.5 < progress["distilled"] <= 1
    assert first["packed_bytes"] < teacher_packed(teacher) / 5  # 80% zeros, 5-bit shared weights


def teacher_packed(teacher: ModelArtifact) -> int:
    from shrinkflow.core import packing

    return len(packing.to_bytes(teacher))


def test_a_study_finds_a_pareto_front_and_chooses_a_small_recipe_near_the_teacher(
    teacher, digits_splits, tmp_path
):
    train, val, test = digits_splits
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db", n_trials=6, sampler="random", sampler_seed=1, space=SPACE
    )
    result = run_search(cfg, PARAMS, teacher, train, val, test, FAST, seed=42)
    trials = result.trials
    assert len(trials) == 6 and result.ran == 6 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["number"].tolist() == list(range(6)) and trials["worker"].nunique() == 1
    done = trials[trials["state"] == "COMPLETE"]
    front = done[done["pareto"]]
    assert len(front) >= 1
    for _, row in done[~done["pareto"]].iterrows():  # every other trial is dominated by a front member
        assert any(
            f.accuracy >= row.accuracy
            and f.packed_bytes <= row.packed_bytes
            and f.latency_b1_p50_ms <= row.latency_b1_p50_ms
            for f in front.itertuples()
        )
    chosen = result.chosen
    assert chosen is not None and chosen["number"] in front["number"].tolist()
    if chosen["within_reach"]:
        assert chosen["metrics"]["accuracy"] >= result.teacher["accuracy"] - cfg.choose_within - 1e-12
        near = front[front["accuracy"] >= result.teacher["accuracy"] - cfg.choose_within - 1e-12]
        assert chosen["metrics"]["packed_bytes"] == near["packed_bytes"].min()
    assert set(chosen["recipe"]) == {"prune", "distill", "quantize"}
    # the written-back recipe rebuilds the trial's model
    again, _ = run_recipe(chosen["recipe"], teacher, train, val, test, FAST, seed=42)
    assert (again["accuracy"], again["packed_bytes"]) == (
        chosen["metrics"]["accuracy"],
        chosen["metrics"]["packed_bytes"],
    )

    # the study is in the storage: a second call with a larger budget continues it
    more = run_search(
        SearchConfig(**{**cfg.to_dict(), "n_trials": 8}), PARAMS, teacher, train, val, test, FAST, 42
    )
    assert more.ran == 2 and more.trials["number"].tolist() == list(range(8))


def test_a_hopeless_recipe_is_pruned_after_distillation_and_the_wall_time_budget_stops_the_worker(
    teacher, digits_splits, tmp_path
):
    train, val, test = digits_splits
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db",
        n_trials=1000,
        timeout_s=3.0,
        max_accuracy_drop=0.0,  # nothing may lose validation accuracy
        space={"prune.options.magnitude.sparsity": {"choices": [0.99]}},
    )
    params = apply(PARAMS, {"prune.finetune.epochs": 0})
    result = run_search(cfg, params, teacher, train, val, test, FAST, seed=42)
    assert 1 <= result.ran < 1000 and result.seconds < 30
    assert set(result.trials["state"]) == {"PRUNED"} and result.chosen is None


def test_choose_falls_back_to_the_most_accurate_when_nothing_is_near_the_teacher():
    trials = pd.DataFrame(
        {
            "number": [0, 1],
            "state": ["COMPLETE", "COMPLETE"],
            "pareto": [True, True],
            "accuracy": [0.90, 0.80],
            "packed_bytes": [2000, 1000],
            "recipe": [{"prune": 1}, {"prune": 2}],
            "params": [{"prune.method": "agp"}, {"prune.method": "magnitude"}],
        }
    )
    cfg = SearchConfig(space=SPACE, objectives=["accuracy", "packed_bytes"])
    assert choose(trials, {"accuracy": 0.95}, cfg)["number"] == 0
    assert choose(trials, {"accuracy": 0.905}, cfg)["number"] == 0
    assert choose(trials, {"accuracy": 0.81}, cfg)["number"] == 1  # both within a point: the smaller
    picked = choose(trials.assign(accuracy=[0.95, 0.95]), {"accuracy": 0.95}, cfg)
    assert picked["number"] == 1 and picked["within_reach"] and picked["recipe"] == {"prune": 2}
    assert picked["params"] == {"prune.method": "magnitude"}
    assert picked["metrics"] == {"accuracy": 0.95, "packed_bytes": 1000.0}


def test_with_one_objective_optunas_pruner_stops_recipes_after_distillation(teacher, digits_splits, tmp_path):
    train, val, test = digits_splits
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db",
        n_trials=10,
        objectives=["accuracy"],
        pruner="median",
        sampler="random",
        sampler_seed=4,  # draws 0.3 four times, then 0.995: the median pruner's 5 start-up trials
        max_accuracy_drop=None,
        space={"prune.options.magnitude.sparsity": {"choices": [0.3, 0.995]}},
    )
    params = apply(PARAMS, {"prune.finetune.epochs": 0})
    result = run_search(cfg, params, teacher, train, val, test, FAST, seed=42)
    trials = result.trials
    pruned = trials[trials["state"] == "PRUNED"]
    assert len(trials) == 10 and len(pruned) >= 1
    assert set(pruned["param.prune.options.magnitude.sparsity"]) == {0.995}  # the hopeless recipe
    assert result.chosen["params"] == {"prune.options.magnitude.sparsity": 0.3}
    # a worker that joins a study whose budget is spent runs nothing
    assert run_search(cfg, params, teacher, train, val, test, FAST, seed=42).ran == 0
