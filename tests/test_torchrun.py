"""`torchrun --nproc_per_node=2 kedro run` on CPU (gloo) through the real CLIs: only rank 0 writes
artifacts and records the MLflow run, and the teacher is as accurate as one process makes it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from test_kedro_run import KEDRO, kedro, make_project

from shrinkflow.core import artifact
from shrinkflow.core.training import evaluate
from shrinkflow.hooks import DistributedHook
from shrinkflow.io import SplitDataset

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def test_ranks_other_than_0_keep_what_the_pipeline_writes_in_memory(monkeypatch, tmp_path):
    pipeline = Pipeline([node(lambda x: x, "train_set", "teacher_model", name="n")])
    catalog = DataCatalog(
        {
            "train_set": SplitDataset(filepath=str(tmp_path / "train.pt")),
            "teacher_model": SplitDataset(filepath=str(tmp_path / "teacher.pt")),
        }
    )
    monkeypatch.setenv("RANK", "0")
    DistributedHook().before_pipeline_run(pipeline=pipeline, catalog=catalog)
    assert isinstance(catalog.get("teacher_model"), SplitDataset)  # rank 0 writes
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    DistributedHook().before_pipeline_run(pipeline=pipeline, catalog=catalog)
    assert isinstance(catalog.get("teacher_model"), MemoryDataset)
    assert isinstance(catalog.get("train_set"), SplitDataset)  # inputs are still read from their files


def torchrun(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true"}
    return subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node=2", "--no-python", KEDRO, "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def teacher_accuracy(project: Path) -> float:
    model = artifact.load(project / "data/06_models/teacher.pt")
    return evaluate(model.model, SplitDataset(filepath=str(project / "data/05_model_input/test.pt")).load())[
        0
    ]


def runs(project: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    return client.search_runs([client.get_experiment_by_name("shrinkflow").experiment_id])


def compare(tmp_path: Path, *params: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(torchrun teacher accuracy, one-process teacher accuracy, the torchrun result)."""
    args = ["--pipelines", "data,train_teacher", *params]
    together = torchrun(make_project(tmp_path / "ddp"), *args)
    assert together.returncode == 0, together.stdout[-3000:] + together.stderr[-3000:]
    alone = kedro(make_project(tmp_path / "one"), *args)
    assert alone.returncode == 0, alone.stdout[-3000:] + alone.stderr[-3000:]
    return teacher_accuracy(tmp_path / "ddp"), teacher_accuracy(tmp_path / "one"), together


def test_torchrun_trains_the_digits_teacher_with_one_writer(tmp_path):
    ddp, one, result = compare(tmp_path, "--params", "train_teacher.train.epochs=20")
    out = " ".join((result.stdout + result.stderr).split())
    assert "torchrun: rank 0 of 2 (gloo)" in out and "torchrun: rank 1 of 2 (gloo)" in out
    # data: 3 splits + summary; train_teacher: the model, its record and its history file
    assert "rank 1 keeps its 7 outputs in memory; rank 0 saves them" in out
    (run,) = runs(tmp_path / "ddp")  # one MLflow run, from rank 0
    assert run.info.status == "FINISHED" and run.data.params["train_teacher.train.epochs"] == "20"
    assert abs(ddp - one) <= 0.02 and ddp >= 0.95  # 360 test images: 2 points is about 2 sigma


@pytest.mark.slow
def test_torchrun_trains_the_mnist_teacher_within_half_a_point_of_one_process(tmp_path):
    mnist = ROOT.parent / "shared/datasets/mnist"
    if not mnist.is_dir():
        pytest.skip(f"MNIST not found at {mnist}")
    ddp, one, _ = compare(tmp_path, "--env", "mnist", "--params", f"mnist_dir={mnist}")
    assert abs(ddp - one) <= 0.005 and ddp >= 0.98
