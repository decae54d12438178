"""The recipe search through the real CLI: `kedro run --pipelines search` in project copies that
trained their teacher, one SQLite study shared by worker processes, MLflow child runs, a killed
worker resumed, and `kedro run --config` reproducing the chosen trial."""

from __future__ import annotations

import itertools
import json
import shutil
import signal
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from test_kedro_run import FAST_EVAL, kedro, metrics, start

#: for the tests of workers and storage: no ONNX export per trial (the runtime objectives are
#: tested above), and one objective, as `--params` cannot give a list with commas
STORAGE_ONLY = "search.objectives=[accuracy]"


def search_args(storage: str, study: str, n_trials: int, *extra: str) -> list[str]:
    params = [
        f"search.storage={storage}",
        f"search.study_name={study}",
        f"search.n_trials={n_trials}",
        *extra,
    ]
    return ["--pipelines", "search", "--params", ",".join([FAST_EVAL, *params])]


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


@pytest.fixture(scope="module")
def trained(good_run_template: Path) -> Path:
    """A project whose default run trained the teacher (the search's input): the session's good run
    (tests/conftest.py), which the tests only copy."""
    return good_run_template


def copy_of(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    return dest


#: acceptance: a batch-1 latency budget on the runtime the model is deployed on (ONNX Runtime, 1
#: thread). A digits MLP runs in about 0.02-0.04 ms there; the budget leaves room for a busy machine.
LATENCY_BUDGET_MS = 0.15


def test_a_search_with_a_latency_budget_writes_its_front_logs_child_runs_and_its_recipe_meets_it(
    trained: Path, tmp_path
):
    project = copy_of(trained, tmp_path / "p")
    storage = f"sqlite:///{tmp_path}/study.db"
    budget = f"search.constraints=[onnx_latency_b1_ms <= {LATENCY_BUDGET_MS}]"
    result = kedro(project, *search_args(storage, "digits", 8, budget))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    out = project / "data/09_search"
    trials = pd.read_csv(out / "trials.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(trials) == 8 and summary["trials"] == 8 and summary["ran_here"] == 8
    assert summary["constraints"] == [f"onnx_latency_b1_ms <= {LATENCY_BUDGET_MS}"]
    assert set(summary["splits"]) == {"val", "test"} and "once" in summary["splits"]["test"]
    assert (out / "pareto_front.png").stat().st_size > 10_000
    chosen = summary["chosen"]
    assert chosen["number"] in summary["pareto"] and chosen["number"] in trials["number"].tolist()
    # every figure names its split; the test split only for the front and the chosen trial
    assert {"val.accuracy", "val.onnx_latency_b1_ms", "test.accuracy", "feasible"} <= set(trials)
    assert not {"accuracy", "packed_bytes"} & set(trials)
    assert set(trials.loc[trials["test.accuracy"].notna(), "number"]) == set(summary["pareto"]) | {
        chosen["number"]
    }
    row = trials.set_index("number").loc[chosen["number"]]
    assert row["feasible"] and row["val.onnx_latency_b1_ms"] <= LATENCY_BUDGET_MS
    assert chosen["val"]["onnx_latency_b1_ms"] <= LATENCY_BUDGET_MS

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    experiment = client.get_experiment_by_name("shrinkflow")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.mlflow.runName = 'search:digits'")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(int(c.data.tags["search.trial"]) for c in children) == list(range(8))
    logged = {int(c.data.tags["search.trial"]): c for c in children}[chosen["number"]]
    assert logged.data.params["prune.method"] == chosen["params"]["prune.method"]
    assert logged.data.metrics["val.packed_bytes"] == chosen["val"]["packed_bytes"]
    assert parent.data.metrics["search.chosen.val.accuracy"] == chosen["val"]["accuracy"]
    assert parent.data.metrics["search.chosen.test.accuracy"] == chosen["test"]["accuracy"]

    # the written-back recipe: `kedro run --config` rebuilds the trial's model, to the last digit,
    # and its ONNX export meets the latency budget there too
    recipe = yaml.safe_load((out / "best_recipe.yml").read_text())
    assert set(recipe["run"]["params"]) == {"seed", "prune", "distill", "quantize"}
    result = kedro(project, "--config", str(out / "best_recipe.yml"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # the recipe's final model: the last stage that ran (quantize.method and distill.method may be
    # none, and a skipped stage's entry holds no metrics)
    document = metrics(project)
    final = next(document[s] for s in ("quantized", "distilled", "pruned") if document[s]["status"] == "done")
    for key in ("accuracy", "packed_bytes", "artifact_bytes", "sparsity", "teacher_agreement"):
        assert final[key] == pytest.approx(chosen["test"][key], rel=1e-12), key
    onnx = json.loads((project / "data/07_model_output/onnx_metrics.json").read_text())
    assert onnx["latency_b1_p50_ms"] <= LATENCY_BUDGET_MS, (onnx["latency_b1_p50_ms"], chosen["val"])


def test_two_workers_share_one_study_and_run_each_trial_once(trained: Path, tmp_path):
    storage = f"sqlite:///{tmp_path}/study.db"
    workers = [
        start(copy_of(trained, tmp_path / name), *search_args(storage, "shared", 12, STORAGE_ONLY))
        for name in "ab"
    ]
    for worker in workers:
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, output[-3000:]
    trials = sorted(load(storage, "shared").trials, key=lambda t: t.number)
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 12 <= len(finished) <= 13  # the budget: a worker may start one trial as the other ends the 12th
    assert [t.number for t in trials] == list(range(len(trials)))
    by_worker = [t.user_attrs["worker"] for t in trials]
    assert len(set(by_worker)) == 2
    switches = sum(a != b for a, b in itertools.pairwise(by_worker))
    assert switches >= 2, by_worker  # interleaved, not one worker's block after the other's
    recipes = [json.dumps(t.params, sort_keys=True) for t in finished]
    assert len(set(recipes)) == len(recipes)  # no recipe ran twice


def test_a_killed_worker_is_resumed_and_its_trial_retried(trained: Path, tmp_path):
    project = copy_of(trained, tmp_path / "p")
    storage = f"sqlite:///{tmp_path}/study.db"
    args = search_args(storage, "resume", 6, "search.heartbeat_s=1", STORAGE_ONLY)
    worker = start(project, *args)
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = load(storage, "resume").trials
        except KeyError:  # the study is not created yet
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if running and any(t.state == TrialState.COMPLETE for t in trials):
            worker.send_signal(signal.SIGKILL)  # mid-trial, no clean-up
            worker.communicate()
            killed = running[0].number
    assert killed is not None, "no trial was seen running"
    assert load(storage, "resume").trials[killed].state == TrialState.RUNNING  # orphaned by the kill
    time.sleep(2.5)  # past the grace period (2 x heartbeat)

    output, _ = (restarted := start(project, *args)).communicate(timeout=600)
    assert restarted.returncode == 0, output[-3000:]
    trials = load(storage, "resume").trials
    assert trials[killed].state == TrialState.FAIL
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
    assert len(retried) == 1 and retried[0].params == trials[killed].params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 6
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # the first worker and its restart
