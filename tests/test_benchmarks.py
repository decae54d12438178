"""The peers benchmark runs end to end on MNIST and writes its table (a short run: one model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peers_benchmark_writes_a_table_with_every_variant(tmp_path: Path):
    mnist = ROOT.parent / "shared/datasets/mnist"
    if not mnist.is_dir():
        pytest.skip(f"MNIST not found at {mnist}")
    args = ["--models", "lenet300", "--threads", "1", "--rounds", "2", "--b1-runs", "20", "--b256-runs", "5"]
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks/peers.py"),
            "--mnist",
            str(mnist),
            "--out",
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "peers.json").read_text())
    assert {"date", "cpu", "torch", "onnxruntime", "torch_pruning"} <= set(document["header"])
    rows = {r["variant"]: r for r in document["results"][0]["tables"]["1"]}
    assert len(rows) == 10 and rows["fp32 eager"]["throughput_b256_speedup"] == 1.0
    assert rows["fp32 eager"]["accuracy"] >= 0.97
    for name, row in rows.items():  # every compressed variant stays within a point of fp32
        assert abs(row["accuracy_delta_pp"]) <= 1.0, name
    # int8 LeNet-300-100 holds a quarter of the fp32 weights, and the int8 paths beat fp32 at batch 256
    assert rows["torch.ao dynamic int8"]["bytes_in_memory"] < rows["fp32 eager"]["bytes_in_memory"] / 3.5
    ours = rows["shrinkflow int8 (ONNX QDQ)"]
    assert ours["throughput_b256_speedup"] > 1.2
    # LeNet-300-100's int8 path is static_int8 exported with its own qparams: the same arithmetic
    assert (ours["method"], ours["qparams"]) == ("static_int8", "torch") and ours["agreement"] >= 0.999
    assert "| shrinkflow int8 (ONNX QDQ) | ONNX Runtime |" in (tmp_path / "peers.md").read_text()
