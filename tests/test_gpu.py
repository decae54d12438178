"""The DAG on one CUDA GPU without torchrun, in bf16, against the CPU in fp32 (run with -m gpu).

Skipped on a machine without CUDA. Accuracy of every stage within 0.5 points of the CPU fp32 run;
every artifact reloads in a process that sees no GPU; the evaluation adds GPU timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_kedro_run import FAST_EVAL, NO_GATE, STAGES, kedro, make_project

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MNIST = Path(
    os.environ.get("MNIST_DIR", Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist")
)


def run(dest: Path, env: str | None, device: str, precision: str, extra: str = "") -> dict:
    project = make_project(dest)
    params = f"runtime.device={device},runtime.precision={precision},{FAST_EVAL},{NO_GATE}{extra}"
    result = kedro(project, *(("--env", env) if env else ()), "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "project": project,
        "metrics": json.loads((project / "data/08_reporting/metrics.json").read_text()),
    }


def reload_on_cpu(project: Path) -> None:
    """Every model artifact loads and predicts in a fresh process with no GPU visible."""
    code = (
        "import sys, torch; from shrinkflow.core import artifact as art\n"
        "assert not torch.cuda.is_available()\n"
        "for path in sys.argv[1:]:\n"
        "    a = art.load(path); x = torch.rand(2, *a.input_shape)\n"
        "    assert all(t.device.type == 'cpu' for t in a.model.state_dict().values() if torch.is_tensor(t))\n"
        "    assert a.model(x).shape == (2, a.num_classes)\n"
    )
    files = [str(project / f"data/06_models/{stage}.pt") for stage in STAGES]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", code, *files], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def compare(cpu: dict, gpu: dict) -> None:
    for stage in STAGES:
        a, b = cpu["metrics"][stage]["accuracy"], gpu["metrics"][stage]["accuracy"]
        assert abs(a - b) <= 0.005, f"{stage}: CPU fp32 {a:.4f}, GPU bf16 {b:.4f}"
    assert gpu["metrics"]["teacher"]["gpu_latency_b1_ms"] > 0
    assert "gpu_latency_b1_ms" not in cpu["metrics"]["teacher"]
    reload_on_cpu(gpu["project"])


def test_the_digits_dag_on_one_gpu_in_bf16_matches_the_cpu(tmp_path):
    compare(run(tmp_path / "cpu", None, "cpu", "fp32"), run(tmp_path / "gpu", None, "cuda", "bf16"))


@pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
def test_the_mnist_environment_on_one_gpu_in_bf16_matches_the_cpu(tmp_path):
    extra = f",mnist_dir={MNIST}"
    compare(
        run(tmp_path / "cpu", "mnist", "cpu", "fp32", extra),
        run(tmp_path / "gpu", "mnist", "cuda", "bf16", extra),
    )
