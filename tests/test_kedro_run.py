"""`kedro run` through the real CLI, in a temporary copy of the project."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))
STAGES = ("teacher", "pruned", "distilled", "quantized")
REQUIRED = (
    "accuracy",
    "loss",
    "params_total",
    "params_nonzero",
    "sparsity",
    "artifact_bytes",
    "compression_ratio",
    "packed_bytes",
    "packed_compression_ratio",
    "macs",
    "macs_nonzero",
    "top5_accuracy",
    "accuracy_noise_0.1",
    "accuracy_noise_0.3",
    "teacher_agreement",
    "latency_b1_p50_ms",
    "throughput_b256_sps",
    "model_memory_bytes",
    "activation_peak_bytes",
    "peak_memory_bytes",
)
FAST_EVAL = "evaluate.latency_runs=20,evaluate.throughput_runs=5"
#: for recipes trained too briefly to hold the default 2-point accuracy gate (test_quality_gates.py tests it)
NO_GATE = "gates.max_accuracy_drop=1.0"


def make_project(dest: Path) -> Path:
    for item in ("conf", "pyproject.toml", "README.md"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / item)
    (dest / "src").mkdir()  # the package itself is the installed one
    for layer in ("06_models", "08_reporting"):
        (dest / "data" / layer).mkdir(parents=True)
    return dest


def kedro(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true"}
    return subprocess.run(
        [KEDRO, "run", *args], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def start(project: Path, *args: str) -> subprocess.Popen[str]:
    """`kedro run` in the background, in its own process group (tests kill it mid-run)."""
    env = {**os.environ, "COLUMNS": "400", "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true"}
    return subprocess.Popen(
        [KEDRO, "run", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def project_after_a_good_run(dest: Path) -> Path:
    """A project copy in which the default digits run has completed (fast timing)."""
    project = make_project(dest)
    result = kedro(project, "--params", FAST_EVAL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


def metrics(project: Path) -> dict:
    return json.loads((project / "data/08_reporting/metrics.json").read_text())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return project_after_a_good_run(tmp_path_factory.mktemp("project"))


def test_default_run_meets_the_digits_targets(default_run: Path):
    document = metrics(default_run)
    assert list(document) == [*STAGES, "onnx"]
    for stage in STAGES:
        assert document[stage]["status"] == "done"
        assert all(key in document[stage] for key in REQUIRED), stage
    teacher, final = document["teacher"], document["quantized"]
    assert teacher["accuracy"] >= 0.97
    assert teacher["accuracy"] - final["accuracy"] <= 0.01
    assert final["compression_ratio"] >= 3.5
    assert document["pruned"]["sparsity"] >= 0.69
    assert (default_run / "data/08_reporting/report.md").read_text().count("| ") >= 4
    assert "quantized" in (default_run / "data/08_reporting/report.csv").read_text()
    # the int8 ONNX candidate agrees with PyTorch; which runtime serves is measured on this machine
    # (ONNX Runtime fp32 beats its int8 on some CPUs): the written ONNX file is the served one when
    # an ONNX runtime serves, else the int8 export; a quarter of the teacher's weights in memory
    deployment = json.loads((default_run / "data/08_reporting/deployment.json").read_text())
    int8 = [r for r in deployment["candidates"] if r["runtime"] == "onnx_int8"]
    assert int8 and min(r["test_agreement"] for r in int8) >= 0.99
    onnx = document["onnx"]
    assert onnx["format"] == ("float" if deployment["runtime"] == "onnx_fp32" else "int8")
    assert onnx["agreement"] >= 0.99
    assert onnx["onnx_bytes"] == (default_run / "data/06_models/final.onnx").stat().st_size
    if onnx["format"] == "int8":
        assert onnx["onnx_bytes"] < teacher["artifact_bytes"] / 3
    assert final["model_memory_bytes"] < teacher["model_memory_bytes"] / 3
    assert "## ONNX export" in (default_run / "data/08_reporting/report.md").read_text()


def test_same_seed_same_figures(default_run: Path, good_run_template: Path):
    # the session's good run (tests/conftest.py): the same command in another copy, another process
    first, second = metrics(default_run), metrics(good_run_template)
    for stage in STAGES:
        for key in ("accuracy", "loss", "params_nonzero", "artifact_bytes"):
            assert first[stage][key] == second[stage][key], (stage, key)


_RELOAD = """
import sys, torch
from shrinkflow.core import artifact
from shrinkflow.core.datasets import digits
x = digits().data.x
torch.save({s: artifact.load(f"{sys.argv[1]}/data/06_models/{s}.pt").model(x) for s in sys.argv[2:]}, sys.argv[1] + "/preds.pt")
"""


def test_every_stage_artifact_reloads_in_a_new_process(default_run: Path):
    from shrinkflow.core import artifact
    from shrinkflow.core.datasets import digits
    from shrinkflow.core.training import evaluate
    from shrinkflow.stages import DataStage, split

    subprocess.run([sys.executable, "-c", _RELOAD, str(default_run), *STAGES], check=True)
    fresh = torch.load(default_run / "preds.pt", weights_only=True)
    x = digits().data.x
    test = split(digits(), DataStage(), seed=42)[2]
    for stage in STAGES:
        loaded = artifact.load(default_run / f"data/06_models/{stage}.pt")
        with torch.inference_mode():
            assert torch.equal(loaded.model(x), fresh[stage]), stage
        # The file on disk is the model that was evaluated: same accuracy to the last digit.
        assert evaluate(loaded.model, test)[0] == metrics(default_run)[stage]["accuracy"], stage


def test_with_no_server_and_no_variable_the_run_is_recorded_in_the_projects_sqlite_store(default_run: Path):
    import mlflow

    assert "MLFLOW_TRACKING_URI" not in os.environ
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{default_run}/mlflow.db")
    experiment = client.get_experiment_by_name("shrinkflow")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "magnitude+soft_kd+static_int8"
    document = metrics(default_run)
    for stage in STAGES:
        assert run.data.metrics[f"{stage}.accuracy"] == pytest.approx(document[stage]["accuracy"])
    assert run.data.params["prune.options.magnitude.sparsity"] == "0.7"
    assert run.data.params["train_teacher.model.name"] == "mlp"
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.md", "report.csv", "accuracy_vs_size.png"} <= logged
    # MLflow 3 keeps logged models beside the run (``runs:/<id>/model`` resolves to it)
    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.name == "model" and model.source_run_id == run.info.run_id
    # artifacts stay inside the project, beside the store
    assert run.info.artifact_uri.startswith((default_run / "mlartifacts").as_uri())


# An out-of-range parameter, an unknown plugin name and a checkpoint of another architecture fail
# before training and keep every artifact: tests/test_bad_input.py runs them in a project after a
# good run.


def test_third_party_plugin_is_used_by_name(tmp_path: Path):
    project = make_project(tmp_path)
    result = kedro(
        project,
        "--params",
        f"prune.method=example_random,prune.options.example_random.sparsity=0.5,{FAST_EVAL},{NO_GATE}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pruned = metrics(project)["pruned"]
    assert pruned["method"] == "example_random"
    assert 0.45 <= pruned["sparsity"] <= 0.5


def test_user_checkpoint_and_import_path_model(tmp_path: Path):
    from shrinkflow.core.models import MLP

    project = make_project(tmp_path)
    torch.manual_seed(0)
    torch.save(MLP((1, 8, 8), 10, hidden=[24]).state_dict(), tmp_path / "mine.pt")
    # kwargs per model: an import path cannot be a dotted --params key, so they go in YAML
    conf = project / "conf" / "base" / "parameters_train_teacher.yml"
    conf.write_text(
        conf.read_text().replace(
            "      mlp: {hidden: [256, 256]}", '      "shrinkflow.core.models:MLP": {hidden: [24]}'
        )
    )
    params = (
        "train_teacher.model.name=shrinkflow.core.models:MLP,"
        f"prune.method=none,distill.method=none,quantize.method=none,teacher_checkpoint={tmp_path / 'mine.pt'},"
        + f"{FAST_EVAL},{NO_GATE}"
    )
    result = kedro(project, "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "teacher epoch" not in result.stdout + result.stderr  # loaded, not trained
    teacher = metrics(project)["teacher"]
    assert teacher["params_total"] == 64 * 24 + 24 + 24 * 10 + 10
    assert teacher["method"] == "checkpoint" and teacher["checkpoint"] == str(tmp_path / "mine.pt")
    assert teacher["checkpoint_sha256"] == hashlib.sha256((tmp_path / "mine.pt").read_bytes()).hexdigest()
    assert teacher["accuracy"] < 0.5  # the untrained weights we saved, not a trained model

    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    result = kedro(
        project,
        "--params",
        f"{params.split(',teacher_checkpoint')[0]},teacher_checkpoint={tmp_path / 'bad.pt'}",
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "bad.pt" in out and "weights_only=True" in out
    # a checkpoint of another architecture: tests/test_bad_input.py


@pytest.mark.slow
def test_mnist_environment_meets_the_lenet_targets(tmp_path: Path):
    mnist = ROOT.parent / "shared/datasets/mnist"
    if not mnist.is_dir():
        pytest.skip(f"MNIST not found at {mnist}")
    project = make_project(tmp_path)
    result = kedro(project, "--env", "mnist", "--params", f"mnist_dir={mnist},{FAST_EVAL}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = metrics(project)
    assert document["teacher"]["params_total"] == 266_610
    assert document["teacher"]["accuracy"] >= 0.980
    assert document["pruned"]["sparsity"] >= 0.89
    assert document["teacher"]["accuracy"] - document["quantized"]["accuracy"] <= 0.003
    # the static int8 model is exported with its own qparams: ONNX Runtime runs the same integer
    # arithmetic and agrees with PyTorch on at least 99.9% of the 10,000 test images
    onnx = document["onnx"]
    served = json.loads((project / "data/08_reporting/deployment.json").read_text())["runtime"]
    if served != "onnx_fp32":  # ONNX Runtime fp32 can outrun its int8 on a CPU without VNNI
        assert (onnx["format"], onnx["qparams"], onnx["method"]) == ("int8", "torch", "onnx int8")
    assert onnx["agreement"] >= 0.999 and document["quantized"]["method"] == "static_int8"
    # int8 LeNet-300-100 holds its weights in a quarter of the fp32 teacher's memory. (Its peak at
    # batch 256 in eager PyTorch is not lower: the PT2E int8 graph dequantizes its weights on every
    # call, 2.9 MB of activations against the teacher's 0.6 MB; the int8 kernels run in ONNX
    # Runtime, the export checked above.)
    assert document["quantized"]["model_memory_bytes"] < 0.3 * document["teacher"]["model_memory_bytes"]


@pytest.mark.slow
def test_a_torchvision_resnet18_teacher_runs_the_whole_dag_on_digits(tmp_path: Path):
    """torchvision's factory by import path, num_classes from its kwargs, grayscale repeated into its
    RGB stem by data.channels; every stage runs and the int8 export agrees with PyTorch."""
    project = make_project(tmp_path)
    params = (
        "train_teacher.model.name=torchvision.models:resnet18,data.channels=3,train_teacher.train.epochs=8,"
        f"prune.finetune.epochs=2,distill.train.epochs=2,{FAST_EVAL},{NO_GATE}"
    )
    result = kedro(project, "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = metrics(project)
    assert document["teacher"]["params_total"] == 11_181_642  # resnet18 with a 10-class head
    assert document["teacher"]["accuracy"] >= 0.9
    assert document["pruned"]["sparsity"] >= 0.69
    assert document["quantized"]["method"] == "static_int8"
    assert document["teacher"]["accuracy"] - document["quantized"]["accuracy"] <= 0.05
    served = json.loads((project / "data/08_reporting/deployment.json").read_text())["runtime"]
    assert document["onnx"]["format"] == ("float" if served == "onnx_fp32" else "int8")
    assert document["onnx"]["agreement"] >= 0.97
