"""A team's set-up, for real: an `mlflow server` on 127.0.0.1, two `kedro run`s against it, then
`kedro shrinkflow compare` and the logged model loaded back from the server."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from shrinkflow.core import artifact
from shrinkflow.core.training import predict
from shrinkflow.io import SplitDataset
from tests._servers import BIN, mlflow_server
from tests.test_kedro_run import FAST_EVAL, STAGES, make_project


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as uri:
        yield uri


COMPARE = [str(BIN / "kedro"), "shrinkflow", "compare"]


def _run(cmd: list[str], project: Path, uri: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "COLUMNS": "400"}
    result = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def two_runs(server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    projects = {}
    for name, params in {
        "magnitude+soft_kd+static_int8": FAST_EVAL,
        "magnitude+soft_kd+half": f"{FAST_EVAL},quantize.method=half,prune.options.magnitude.sparsity=0.5",
    }.items():
        project = make_project(tmp_path_factory.mktemp("project"))
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", "--allow-empty"],
            cwd=project,
            check=True,
        )
        _run([str(BIN / "kedro"), "run", "--params", params], project, server)
        projects[name] = project
    return projects


def test_both_runs_are_on_the_server_with_every_stage_metric_params_and_tags(server: str, two_runs):
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("shrinkflow")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(two_runs)
    for name, project in two_runs.items():
        run, local = runs[name], json.loads((project / "data/08_reporting/metrics.json").read_text())
        for stage in STAGES:
            for key in ("accuracy", "packed_bytes", "artifact_bytes", "sparsity"):
                assert run.data.metrics[f"{stage}.{key}"] == pytest.approx(local[stage][key]), (
                    name,
                    stage,
                    key,
                )
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
        ).stdout
        assert run.data.tags["mlflow.source.git.commit"] == commit.strip()
        assert run.data.tags["method.prune"] == "magnitude"
        assert run.data.tags["method.prune.distribution"].startswith("shrinkflow==")
        assert run.data.tags["model"] == "mlp" and run.data.tags["dataset"] == "digits"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "report.md", "report.csv", "accuracy_vs_size.png"} <= artifacts
    half = runs["magnitude+soft_kd+half"]
    assert half.data.params["prune.options.magnitude.sparsity"] == "0.5"
    assert half.data.params["quantize.method"] == "half"
    assert runs["magnitude+soft_kd+static_int8"].data.params["prune.options.magnitude.sparsity"] == "0.7"


def test_compare_lists_both_runs_with_per_stage_metrics_and_writes_the_pareto_plot(
    server: str, two_runs, tmp_path
):
    project = next(iter(two_runs.values()))
    out = _run(
        [
            *COMPARE,
            "--metrics",
            "accuracy,packed_bytes",
            "--plot",
            str(tmp_path / "pareto.png"),
            "--csv",
            str(tmp_path / "runs.csv"),
        ],
        project,
        server,
    ).stdout
    assert "2 run(s) of experiment 'shrinkflow'" in out
    table = [line for line in out.splitlines() if line.startswith("| magnitude+")]
    assert len(table) >= 8  # 2 runs x 4 stages, then the Pareto rows
    csv = tmp_path.joinpath("runs.csv").read_text()
    for name, project in two_runs.items():
        local = json.loads((project / "data/08_reporting/metrics.json").read_text())
        assert name in csv
        assert f"{local['quantized']['packed_bytes']:,}".replace(",", "") in out.replace(",", "")
    assert tmp_path.joinpath("pareto.png").stat().st_size > 5_000
    # a tag filter narrows the list to one run
    one = _run(
        [
            *COMPARE,
            "--tag",
            "method.quantize=half",
            "--plot",
            str(tmp_path / "p2.png"),
        ],
        project,
        server,
    ).stdout
    assert "1 run(s)" in one and "magnitude+soft_kd+half" in one
    # a newer run on another data set is not ranked against the digits runs: the comparison keeps to
    # the newest run's data set, says so, and --tag dataset=... picks the other
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("shrinkflow").experiment_id
    other = client.create_run(experiment, run_name="on-mnist", tags={"dataset": "mnist"}).info.run_id
    try:
        for stage in ("teacher", "pruned", "distilled", "quantized"):
            client.log_metric(other, f"{stage}.accuracy", 0.99)
            client.log_metric(other, f"{stage}.packed_bytes", 10.0)
        client.set_terminated(other)
        mixed = _run([*COMPARE, "--plot", str(tmp_path / "p3.png")], project, server).stdout
        assert "comparing the 1 on 'mnist' (the newest run's) and leaving out 'digits' (2)" in mixed
        assert "1 run(s) of experiment 'shrinkflow' on 'mnist'" in mixed and "magnitude+" not in mixed
        digits = _run(
            [*COMPARE, "--tag", "dataset=digits", "--plot", str(tmp_path / "p4.png")], project, server
        )
        assert "2 run(s) of experiment 'shrinkflow' on 'digits'" in digits.stdout
        assert "on-mnist" not in digits.stdout and "note:" not in digits.stdout
        # a data set no run was on: the error names the tag and what was expected
        env = {**os.environ, "MLFLOW_TRACKING_URI": server, "COLUMNS": "400"}
        none = subprocess.run(
            [*COMPARE, "--tag", "dataset=cifar10"], cwd=project, env=env, capture_output=True, text=True
        )
        assert none.returncode != 0
        assert (
            f"no runs in experiment 'shrinkflow' at {server} matching --tag dataset=cifar10: expected runs "
            "that evaluated every one of the stages teacher, pruned, distilled, quantized"
        ) in " ".join(none.stderr.split())
    finally:
        client.delete_run(other)


def test_the_logged_final_model_loads_from_the_server_and_predicts_like_the_artifact(
    server: str, two_runs, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)  # not mlflow.set_tracking_uri: it outlives the test
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("shrinkflow")
    for run in client.search_runs([experiment.experiment_id]):
        project = two_runs[run.info.run_name]
        test = SplitDataset(str(project / "data/05_model_input/test.pt")).load()
        saved = artifact.load(project / "data/06_models/quantized.pt")
        served = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        logits = served.predict(test.x.numpy())
        expected = predict(saved.model, test.x).numpy()
        assert logits.shape == (len(test), test.num_classes)
        np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
        assert (logits.argmax(1) == expected.argmax(1)).all()
        # the model's own check (MLflow's schema check would stop it first through predict())
        with pytest.raises(ValueError, match=r"input of shape \(2, 64\): expected \(N, 1, 8, 8\)"):
            served.unwrap_python_model().predict(None, np.zeros((2, 64), dtype=np.float32))
        empty = served.predict(np.zeros((0, 1, 8, 8), dtype=np.float32))
        assert empty.shape == (0, test.num_classes)


def test_each_training_stage_logs_one_point_per_epoch_and_compare_draws_them(server: str, two_runs, tmp_path):
    client = mlflow.MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name("shrinkflow")
    for run in client.search_runs([experiment.experiment_id]):
        project = two_runs[run.info.run_name]
        for model, stage in (("teacher", "train_teacher"), ("pruned", "prune"), ("distilled", "distill")):
            local = pd.read_csv(project / f"data/08_reporting/history/{stage}.csv")  # DVC's plot file
            assert len(local) >= 2, (stage, local)
            for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
                points = sorted(
                    (p.step, p.value) for p in client.get_metric_history(run.info.run_id, f"{model}.{key}")
                )
                assert [step for step, _ in points] == local["step"].tolist(), (model, key)
                np.testing.assert_allclose([v for _, v in points], local[key], rtol=1e-6)
    project = next(iter(two_runs.values()))
    out = _run(
        [
            *COMPARE,
            "--plot",
            str(tmp_path / "p.png"),
            "--curves",
            str(tmp_path / "c.png"),
        ],
        project,
        server,
    ).stdout
    assert f"curves: {tmp_path / 'c.png'} (2 of 2 run(s))" in out
    assert tmp_path.joinpath("c.png").stat().st_size > 20_000
