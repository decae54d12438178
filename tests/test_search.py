"""The recipe search engine: its configuration, the declared space, a real Optuna study on digits."""

from __future__ import annotations

import copy

import optuna
import pandas as pd
import pytest
import torch

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.datasets import digits
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, seed_everything
from shrinkflow.search import (
    Constraint,
    SearchConfig,
    apply,
    build_recipe,
    choose,
    run_recipe,
    run_search,
    sample,
)
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
#: objectives without timing: the same trials give the same choice, however busy the machine
STEADY = ["accuracy", "packed_bytes"]


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
        (
            {"constraints": ["latency < 3"]},
            r"constraints\[0\]='latency < 3' is invalid: expected '<metric> <= <number>'",
        ),
        ({"constraints": ["speed <= 3"]}, r"constraints\[0\] metric='speed' is invalid: expected one of"),
        (
            {"constraints": "packed_bytes <= 3"},
            r"constraints='packed_bytes <= 3' is invalid: expected a list",
        ),
        (
            {"choose": "fastest"},
            r"choose='fastest' is invalid: expected one of \['most_accurate', 'smallest'\]",
        ),
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
    train, val, _ = digits_splits
    recipe = apply(PARAMS, {"prune.options.magnitude.sparsity": 0.8, "quantize.method": "weight_sharing"})
    model, progress = build_recipe(recipe, teacher, train, val, seed=7)
    first = run_recipe(recipe, teacher, train, val, val, FAST, seed=7)
    second = run_recipe(copy.deepcopy(recipe), teacher, train, val, val, FAST, seed=7)
    for key in ("accuracy", "packed_bytes", "artifact_bytes", "sparsity", "teacher_agreement"):
        assert first[key] == second[key], key
    assert first["sparsity"] == pytest.approx(0.8, abs=0.02)  # of all parameters: biases stay dense
    assert 0.5 < progress["distilled"] <= 1
    assert first["packed_bytes"] < teacher_packed(teacher) / 5  # 80% zeros, 5-bit shared weights
    assert first["accuracy"] == pytest.approx(float((model.model(val.x).argmax(1) == val.y).float().mean()))


def teacher_packed(teacher: ModelArtifact) -> int:
    from shrinkflow.core import packing

    return len(packing.to_bytes(teacher))


def test_a_study_chooses_on_validation_and_reads_the_test_split_once_for_the_front_and_the_choice(
    teacher, digits_splits, tmp_path
):
    train, val, test = digits_splits
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db",
        n_trials=6,
        sampler="random",
        sampler_seed=1,
        space=SPACE,
        objectives=[*STEADY, "latency_b1_p50_ms"],
    )
    result = run_search(cfg, PARAMS, teacher, train, val, test, FAST, seed=42)
    trials = result.trials
    assert len(trials) == 6 and result.ran == 6 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert trials["number"].tolist() == list(range(6)) and trials["worker"].nunique() == 1
    done = trials[trials["state"] == "COMPLETE"]
    assert done["feasible"].all()  # no constraints
    front = done[done["pareto"]]
    assert len(front) >= 1
    for _, row in done[~done["pareto"]].iterrows():  # every other trial is dominated by a front member
        assert any(
            f["val.accuracy"] >= row["val.accuracy"]
            and f["val.packed_bytes"] <= row["val.packed_bytes"]
            and f["val.latency_b1_p50_ms"] <= row["val.latency_b1_p50_ms"]
            for _, f in front.iterrows()
        )
    chosen = result.chosen
    assert chosen is not None and chosen["number"] in front["number"].tolist()
    # the rule, on validation figures: the smallest within a point of the teacher's validation accuracy
    reach = result.teacher["val"]["accuracy"] - cfg.choose_within - 1e-12
    near = done[done["val.accuracy"] >= reach]
    if chosen["within_reach"]:
        assert chosen["val"]["packed_bytes"] == near["val.packed_bytes"].min()
    else:
        assert chosen["val"]["accuracy"] == done["val.accuracy"].max()
    # the test split: measured for the front and the chosen trial only
    tested = trials[trials["test.accuracy"].notna()]
    assert set(tested["number"]) == set(front["number"]) | {chosen["number"]}
    assert result.teacher["test"]["accuracy"] > 0.9 and len(test) != len(val)
    # the written-back recipe rebuilds the trial's model: its test figures, to the last digit
    again = run_recipe(chosen["recipe"], teacher, train, val, test, FAST, seed=42)
    assert (again["accuracy"], again["packed_bytes"]) == (
        chosen["test"]["accuracy"],
        chosen["test"]["packed_bytes"],
    )
    assert chosen["val"]["packed_bytes"] == chosen["test"]["packed_bytes"]

    # the study is in the storage: a second call with a larger budget continues it, and the test
    # figures already measured are read back, not measured again
    more = run_search(
        SearchConfig(**{**cfg.to_dict(), "n_trials": 8}), PARAMS, teacher, train, val, test, FAST, 42
    )
    assert more.ran == 2 and more.trials["number"].tolist() == list(range(8))
    study = optuna.load_study(study_name=cfg.study_name, storage=cfg.storage)
    measured = {k for k in study.user_attrs if k.startswith("test.trial.")}
    now = set(more.trials[more.trials["test.accuracy"].notna()]["number"])
    # the test figures of the first front stay (kept once); the new front's are added
    assert measured == {f"test.trial.{n}" for n in now | set(tested["number"])}


def test_shuffling_the_test_labels_changes_no_choice_only_the_test_figures(teacher, digits_splits, tmp_path):
    """The search never looks at the test labels: with them shuffled it samples, prunes and
    chooses exactly as before, and only the test figures (measured after the choice) change."""
    train, val, test = digits_splits
    shuffled = Split.of(
        test.x, test.y[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))], 10
    )
    space = {**SPACE, "distill.method": {"choices": ["none", "soft_kd"]}}
    results = []
    for name, data in (("real", test), ("shuffled", shuffled)):
        cfg = SearchConfig(
            storage=f"sqlite:///{tmp_path}/{name}.db",
            n_trials=6,
            sampler="tpe",  # adaptive: later draws depend on the figures of earlier trials
            sampler_seed=3,
            space=space,
            objectives=STEADY,
            constraints=["accuracy_drop_pp <= 3"],
            max_accuracy_drop=0.04,
        )
        results.append(run_search(cfg, PARAMS, teacher, train, val, data, FAST, seed=42))
    real, mixed = results
    assert real.chosen is not None
    assert {k: real.chosen[k] for k in ("number", "recipe", "params")} == {
        k: mixed.chosen[k] for k in ("number", "recipe", "params")
    }
    figures = ["accuracy", "loss", "teacher_agreement", "packed_bytes", "sparsity"]  # not the timings
    assert {k: real.chosen["val"][k] for k in figures} == {k: mixed.chosen["val"][k] for k in figures}
    columns = [
        "number",
        "state",
        "feasible",
        "pareto",
        *[c for c in real.trials if str(c).startswith("param.")],
    ]
    pd.testing.assert_frame_equal(real.trials[columns], mixed.trials[columns])
    pd.testing.assert_series_equal(real.trials["val.accuracy"], mixed.trials["val.accuracy"])
    # the test figures did read the labels given: about 1 in 10 right when they are shuffled
    assert real.chosen["test"]["accuracy"] > 0.85 and mixed.chosen["test"]["accuracy"] < 0.2
    assert real.teacher["test"]["accuracy"] > 0.9 > 0.2 > mixed.teacher["test"]["accuracy"]


def test_constraints_make_trials_infeasible_and_the_runtime_objectives_time_the_onnx_export(
    teacher, digits_splits, tmp_path
):
    train, val, test = digits_splits
    teacher_bytes = teacher_packed(teacher)
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db",
        n_trials=5,
        sampler="random",
        sampler_seed=2,
        space={**SPACE, "quantize.method": {"choices": ["none", "static_int8"]}},
        objectives=["accuracy", "onnx_latency_b1_ms"],
        constraints=[f"packed_bytes <= {teacher_bytes * 0.25:.0f}", "onnx_agreement >= 0.95"],
        choose="most_accurate",
    )
    result = run_search(cfg, PARAMS, teacher, train, val, test, FAST, seed=42)
    done = result.trials[result.trials["state"] == "COMPLETE"]
    assert len(done) == 5
    assert (done["val.onnx_latency_b1_ms"] > 0).all() and (done["val.onnx_throughput_sps"] > 0).all()
    assert (done["val.onnx_agreement"] >= 0.9).all() and result.teacher["val"]["onnx_latency_b1_ms"] > 0
    expected = (done["val.packed_bytes"] <= round(teacher_bytes * 0.25)) & (
        done["val.onnx_agreement"] >= 0.95
    )
    assert done["feasible"].tolist() == expected.tolist()
    assert 0 < expected.sum() < 5, done[
        ["val.packed_bytes", "val.onnx_agreement"]
    ]  # the seed draws both kinds
    assert not done.loc[~done["feasible"], "pareto"].any()  # the front holds feasible trials only
    chosen = result.chosen
    assert chosen["val"]["accuracy"] == done.loc[done["feasible"], "val.accuracy"].max()
    assert chosen["val"]["packed_bytes"] <= teacher_bytes * 0.25


def test_a_constraint_is_violated_by_how_much_it_is_missed():
    latency = Constraint.parse("onnx_latency_b1_ms <= 0.05", "c")
    assert latency.violation({"onnx_latency_b1_ms": 0.04}) == pytest.approx(-0.01)
    assert latency.violation({"onnx_latency_b1_ms": 0.07}) == pytest.approx(0.02)
    assert latency.violation({}) == float("inf") and str(latency) == "onnx_latency_b1_ms <= 0.05"
    agree = Constraint.parse(" onnx_agreement>=9.99e-1 ", "c")
    assert agree.violation({"onnx_agreement": 1.0}) == pytest.approx(-0.001)


def test_a_hopeless_recipe_is_pruned_after_distillation_and_the_wall_time_budget_stops_the_worker(
    teacher, digits_splits, tmp_path
):
    train, val, test = digits_splits
    cfg = SearchConfig(
        storage=f"sqlite:///{tmp_path}/study.db",
        n_trials=1000,
        timeout_s=3.0,
        max_accuracy_drop=0.0,  # nothing may lose validation accuracy
        objectives=STEADY,
        space={"prune.options.magnitude.sparsity": {"choices": [0.99]}},
    )
    params = apply(PARAMS, {"prune.finetune.epochs": 0})
    result = run_search(cfg, params, teacher, train, val, test, FAST, seed=42)
    assert 1 <= result.ran < 1000 and result.seconds < 30
    assert set(result.trials["state"]) == {"PRUNED"} and result.chosen is None


def _frame(**columns) -> pd.DataFrame:
    n = len(columns["val.accuracy"])
    return pd.DataFrame(
        {
            "number": list(range(n)),
            "state": ["COMPLETE"] * n,
            "pareto": [True] * n,
            "feasible": [True] * n,
            "recipe": [{"prune": i} for i in range(n)],
            "params": [{"prune.method": f"m{i}"} for i in range(n)],
            **columns,
        }
    )


def test_choose_takes_the_smallest_near_the_teacher_or_the_most_accurate_and_only_feasible_trials():
    trials = _frame(
        **{"val.accuracy": [0.90, 0.80], "val.packed_bytes": [2000, 1000], "test.accuracy": [0.5, 0.4]}
    )
    cfg = SearchConfig(space=SPACE, objectives=STEADY)
    assert choose(trials, {"accuracy": 0.95}, cfg)["number"] == 0  # none within a point: the most accurate
    assert choose(trials, {"accuracy": 0.905}, cfg)["number"] == 0
    assert choose(trials, {"accuracy": 0.81}, cfg)["number"] == 1  # both within a point: the smaller
    assert (
        choose(
            trials, {"accuracy": 0.81}, SearchConfig(space=SPACE, objectives=STEADY, choose="most_accurate")
        )["number"]
        == 0
    )
    # the test figures play no part: the less accurate on test is still chosen
    picked = choose(trials.assign(**{"val.accuracy": [0.95, 0.95]}), {"accuracy": 0.95}, cfg)
    assert picked["number"] == 1 and picked["within_reach"] and picked["recipe"] == {"prune": 1}
    assert picked["params"] == {"prune.method": "m1"} and picked["rule"] == "smallest"
    assert picked["val"] == {"accuracy": 0.95, "packed_bytes": 1000.0} and picked["test"] == {"accuracy": 0.4}
    # an infeasible trial is never chosen, however good; none feasible: no choice
    assert choose(trials.assign(feasible=[False, True]), {"accuracy": 0.95}, cfg)["number"] == 1
    assert choose(trials.assign(feasible=[False, False]), {"accuracy": 0.95}, cfg) is None


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
