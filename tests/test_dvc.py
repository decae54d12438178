"""`dvc repro`, `dvc exp run`, the experiment queue and a push/pull round trip, for real, in a fresh
git repository made from this project's tracked files (the package itself is the installed one)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODELS = ("teacher", "pruned", "distilled", "quantized")
# What the DVC stages need; tests/, benchmarks/ and notebooks/ stay behind.
NEEDED = ("pyproject.toml", "dvc.yaml", ".dvcignore", ".gitignore", ".dvc/", "conf/", "src/", "data/")


def _env() -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "400"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own mlflow.db
    return env


def sh(repo: Path, *cmd: str, timeout: int = 900) -> str:
    result = subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout + result.stderr


def git(repo: Path, *args: str) -> str:
    return sh(repo, "git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args)


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def digests(repo: Path) -> dict[str, str]:
    return {m: hashlib.sha256((repo / f"data/06_models/{m}.pt").read_bytes()).hexdigest() for m in MODELS}


def make_repo(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if name.startswith(NEEDED) and (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    # fewer timing repeats: this test is about the pipeline, not the latency figures
    evaluate = dest / "conf/base/parameters_evaluate.yml"
    text = (
        evaluate.read_text()
        .replace("latency_runs: 200", "latency_runs: 20")
        .replace("throughput_runs: 20", "throughput_runs: 5")
    )
    evaluate.write_text(text)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "project")
    return dest


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A reproduced repository: `dvc repro` twice (timed), committed as the baseline."""
    repo = make_repo(tmp_path_factory.mktemp("repo"))
    first = sh(repo, "dvc", "repro")
    start = time.monotonic()
    second = sh(repo, "dvc", "repro")
    noop_seconds = time.monotonic() - start
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline: dvc repro")
    return {"path": repo, "first": first, "second": second, "noop_seconds": noop_seconds}


def test_repro_runs_every_stage_then_nothing(repo: dict):
    assert ran(repo["first"]) == [
        "data",
        "train_teacher",
        "prune",
        "distill",
        "quantize",
        "evaluate@teacher",
        "evaluate@pruned",
        "evaluate@distilled",
        "evaluate@quantized",
        "export",
        "report",
    ]
    assert ran(repo["second"]) == [] and "Data and pipelines are up to date" in repo["second"]
    print(f"second dvc repro: {repo['noop_seconds']:.1f} s, nothing to do")
    metrics = json.loads((repo["path"] / "data/08_reporting/metrics.json").read_text())
    assert metrics["quantized"]["accuracy"] >= 0.95
    assert "dvc.lock" in git(repo["path"], "ls-files")
    # the report files are git's (cache: false); models and splits are DVC's, never git's
    tracked = git(repo["path"], "ls-files", "data").split()
    assert "data/08_reporting/metrics.json" in tracked
    assert not [f for f in tracked if f.endswith(".pt")]


def test_plots_show_draws_the_training_curves_of_every_stage_that_trained(repo: dict, tmp_path: Path):
    data = json.loads(sh(repo["path"], "dvc", "plots", "show", "--json"))["data"]
    history = repo["path"] / "data/08_reporting/history"
    for title, fields in (
        ("validation accuracy per epoch", ["val_accuracy"]),
        ("loss per epoch", ["train_loss", "val_loss"]),
        ("learning rate per epoch", ["lr"]),
    ):
        values = data[title][0]["content"]["data"]["values"]
        for stage in ("train_teacher", "prune", "distill"):
            rows = list(csv.DictReader(io.StringIO((history / f"{stage}.csv").read_text())))
            assert len(rows) >= 2, stage  # one per epoch of the stage's training
            for field in fields:
                # one y field: points name their file; several: "file::field", y in dvc_inferred_y_value
                key = f"{stage}.csv" if len(fields) == 1 else f"{stage}.csv::{field}"
                drawn = [v for v in values if v.get("filename", v.get("filename::field")) == key]
                y = field if len(fields) == 1 else "dvc_inferred_y_value"
                assert [(int(v["step"]), float(v[y])) for v in drawn] == [
                    (int(r["step"]), float(r[field])) for r in rows
                ], (title, stage, field)
    # the report's scatter uses the project's template (.dvc/plots/accuracy_vs_size.json): a log size
    # axis, an accuracy axis that is not pinned to 0, and every stage's point labelled by its name
    scatter = data["data/08_reporting/report.csv"][0]["content"]
    assert scatter["title"]["text"] == "test accuracy against packed size per stage"
    assert scatter["encoding"]["x"]["field"] == "packed_bytes"
    assert scatter["encoding"]["x"]["scale"] == {"type": "log", "zero": False}
    assert (
        scatter["encoding"]["y"]["field"] == "accuracy" and scatter["encoding"]["y"]["scale"]["zero"] is False
    )
    labels = [layer for layer in scatter["layer"] if layer["mark"]["type"] == "text"]
    assert labels and all(layer["encoding"]["text"]["field"] == "stage" for layer in labels)
    assert {v["stage"] for v in scatter["data"]["values"]} == set(MODELS)
    # the HTML page DVC writes carries the three plots
    sh(repo["path"], "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots/index.html").read_text()
    assert all(
        t in page for t in ("validation accuracy per epoch", "loss per epoch", "learning rate per epoch")
    )
    tracked = git(repo["path"], "ls-files", "data/08_reporting/history").split()
    assert sorted(tracked) == [
        f"data/08_reporting/history/{s}.csv" for s in ("distill", "prune", "quantize", "train_teacher")
    ]


def test_exp_run_of_a_quantize_parameter_reruns_only_what_depends_on_it(repo: dict):
    path = repo["path"]
    before = digests(path)
    out = sh(
        path,
        "dvc",
        "exp",
        "run",
        "-n",
        "half",
        "-S",
        "conf/base/parameters_quantize.yml:quantize.method=half",
    )
    assert ran(out) == ["quantize", "evaluate@quantized", "export", "report"]
    after = digests(path)
    assert {m for m in MODELS if before[m] != after[m]} == {"quantized"}
    table = list(csv.DictReader(io.StringIO(sh(path, "dvc", "exp", "show", "--csv"))))
    rows = {row["Experiment"] or row["rev"]: row for row in table}
    assert rows["half"]["quantize.method"] == "half" and rows["main"]["quantize.method"] == "static_int8"
    for name in ("half", "main"):  # both with their metrics
        assert (
            float(rows[name]["quantized.accuracy"]) >= 0.95
            and float(rows[name]["quantized.packed_bytes"]) > 0
        )
    assert float(rows["half"]["quantized.packed_bytes"]) > float(rows["main"]["quantized.packed_bytes"])
    diff = sh(path, "dvc", "metrics", "diff", "--md")
    assert "quantized.packed_bytes" in diff
    # the experiment's MLflow runs carry its name
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("shrinkflow").experiment_id], "tags.DVC_EXP_NAME = 'half'"
    )
    assert sorted(r.info.run_name for r in runs) == [
        "half/evaluate@quantized",
        "half/export",
        "half/quantize",
        "half/report",
    ]


def test_push_then_pull_into_a_second_clone_restores_identical_models(repo: dict, tmp_path: Path):
    path = repo["path"]
    git(path, "checkout", "-q", "--", ".")  # back to the baseline after the experiment
    sh(path, "dvc", "checkout", "--force")
    expected = digests(path)
    sh(path, "dvc", "remote", "add", "-d", "--local", "store", str(tmp_path / "remote"))
    sh(path, "dvc", "push")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(path), str(clone))
    sh(clone, "dvc", "remote", "add", "-d", "--local", "store", str(tmp_path / "remote"))
    sh(clone, "dvc", "pull")
    assert digests(clone) == expected
    assert sh(clone, "dvc", "status").strip().endswith("Data and pipelines are up to date.")


@pytest.mark.slow
def test_a_queued_experiment_runs_and_its_mlflow_runs_carry_its_name(repo: dict):
    path = repo["path"]
    # bf16 (not the fp16 of the experiment above: DVC's run cache would restore that without running)
    sh(
        path,
        "dvc",
        "exp",
        "run",
        "--queue",
        "-n",
        "queued-bf16",
        "-S",
        "conf/base/parameters_quantize.yml:quantize.method=half",
        "-S",
        "conf/base/parameters_quantize.yml:quantize.options.half.dtype=bfloat16",
    )
    sh(path, "dvc", "queue", "start")
    deadline = time.monotonic() + 600
    while "Success" not in (status := sh(path, "dvc", "queue", "status")):
        assert "Failed" not in status and time.monotonic() < deadline, status + sh(
            path, "dvc", "queue", "logs", "queued-bf16"
        )
        time.sleep(3)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}/mlflow.db")
    runs = client.search_runs(
        [client.get_experiment_by_name("shrinkflow").experiment_id], "tags.DVC_EXP_NAME = 'queued-bf16'"
    )
    # The queue runs in a copy under .dvc/tmp/exps/; its runs are recorded in this repo's store.
    names = [f"queued-bf16/{s}" for s in ("evaluate@quantized", "export", "quantize", "report")]
    assert sorted(r.info.run_name for r in runs) == names
    report = next(r for r in runs if r.info.run_name == "queued-bf16/report")
    assert report.data.metrics["quantized.accuracy"] >= 0.9
    assert "queued-bf16" in sh(path, "dvc", "exp", "show", "--md")
