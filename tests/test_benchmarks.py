"""The benchmarks run end to end and write their tables: peers on MNIST (a short run: one model),
cnn in its quick mode on small MNIST-format IDX files made here."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    openvino = {"NNCF PTQ int8 (OpenVINO)", "OpenVINO fp32"}  # with the optional extra only
    assert len(set(rows) - openvino) == 11 and rows["fp32 eager"]["throughput_b256_speedup"] == 1.0
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
    # the deployed row: the AGP + int8 model on the runtimes the export stage chose per batch size,
    # each agreeing with the model on >= 99.9% of validation
    deployed = rows["shrinkflow deployed: AGP 92% + static_int8"]
    choice = deployed["deployment"]["chosen"]
    assert (
        set(choice) == {"1", "256"}
        and deployed["runtime"] == f"chosen (b1: {choice['1']}, b256: {choice['256']})"
    )
    chosen = [c for c in deployed["deployment"]["candidates"] if c["chosen"]]
    assert len(chosen) == 2 and all(c["val_agreement"] >= 0.999 for c in chosen)
    assert deployed["throughput_b256_speedup"] > 1.2


def _mnist_like(folder: Path, n_train: int = 600, n_test: int = 200) -> Path:
    """The four gzipped IDX files of MNIST with 28x28 noise images, a class-dependent bright square."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[i, 4 + 10 * row : 10 + 10 * row, 2 + 5 * col : 6 + 5 * col] = 255
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
            (folder / f"{stem}.gz").write_bytes(gzip.compress(header + array.tobytes()))
    return folder


def test_cnn_benchmark_quick_mode_writes_every_row(tmp_path: Path):
    mnist, out = _mnist_like(tmp_path / "mnist"), tmp_path / "out"
    command = [sys.executable, str(ROOT / "benchmarks/cnn.py"), "--quick", "--models", "resnet20"]
    result = subprocess.run(
        [*command, "--mnist", str(mnist), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((out / "cnn.json").read_text())
    header = document["header"]
    assert {"date", "cpu", "python", "torch", "torchao", "onnxruntime", "torch_pruning", "shrinkflow"} <= set(
        header
    )
    assert header["quick"] is True and header["seconds"] > 0 and "--quick" in header["command"]
    assert (header["train_images"], header["val_images"], header["test_images"]) == (480, 120, 200)
    (model,) = document["results"]
    assert model["key"] == "resnet20" and model["recipe"]["channel_ratio"] == 0.4
    for phase in ("teacher", "prune + fine-tune", "soft KD", "static int8"):
        assert 0.0 <= model["phases"][phase]["val_accuracy"] <= 1.0, phase
    rows = {r["variant"]: r for r in model["tables"]["1"]}
    teacher, pruned, int8 = (
        rows["fp32 eager (teacher)"],
        rows["pruned fp32 eager"],
        rows["pruned int8 PT2E eager"],
    )
    ort = {k: rows[f"ORT {k}"] for k in ("fp32 (teacher)", "fp32 (pruned)", "int8 (pruned, our export)")}
    assert len(rows) == 6
    assert teacher["macs"] > 30e6 and teacher["macs_ratio"] == 1.0  # ResNet-20 on 28x28: 31M MACs
    assert teacher["latency_b1_speedup"] == teacher["throughput_b256_speedup"] == 1.0
    for row in (pruned, int8, ort["fp32 (pruned)"], ort["int8 (pruned, our export)"]):
        # channel pruning at ratio 0.4 removes channels for real: 2.94x fewer MACs on every pruned row
        assert row["macs"] == pruned["macs"] and row["macs_ratio"] > 2.5, row["variant"]
        assert row["params"] < teacher["params"] / 2.5, row["variant"]
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["latency_b1_ms"] > 0 and row["throughput_b256_sps"] > 0
        if row["runtime"] == "PyTorch":
            assert row["agreement"] is None, row["variant"]
        else:
            assert 0.0 <= row["agreement"] <= 1.0, row["variant"]
    assert ort["fp32 (teacher)"]["agreement"] >= 0.99 and ort["fp32 (pruned)"]["agreement"] >= 0.99
    assert (ort["int8 (pruned, our export)"]["onnx_format"], ort["int8 (pruned, our export)"]["qparams"]) == (
        "int8",
        "torch",
    )
    # sizes: int8 artifact < pruned fp32 artifact < teacher artifact; the int8 ONNX file below the fp32 one
    assert int8["artifact_bytes"] < pruned["artifact_bytes"] < teacher["artifact_bytes"] / 2
    assert ort["int8 (pruned, our export)"]["artifact_bytes"] < ort["fp32 (pruned)"]["artifact_bytes"]
    targets = {t["target"]: t for t in header["targets"]}
    assert len(targets) == 5 and all(isinstance(t["met"], bool) for t in targets.values())
    assert targets["pruned MACs cut >= 2.5x"]["met"] is True
    table = (out / "cnn.md").read_text()
    for name in rows:
        assert f"| ResNet-20 | {name} |" in table
    assert "## Targets" in table


@pytest.mark.slow
def test_sst2_benchmark_quick_mode_writes_every_row(tmp_path: Path):
    from tests.core.test_text import corpus, write_tsv

    data, out = tmp_path / "sst2", tmp_path / "out"
    data.mkdir()
    for name, n, seed in (("train", 600, 0), ("dev", 100, 1), ("test", 120, 2)):
        write_tsv(data / f"{name}.tsv", corpus(n, seed))
    command = [
        sys.executable,
        str(ROOT / "benchmarks/sst2.py"),
        "--quick",
        "--sst2",
        str(data),
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT / "benchmarks")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((out / "sst2.json").read_text())
    header, rows = document["header"], {r["variant"]: r for r in document["table"]}
    assert {"date", "cpu", "torch", "tokenizers", "onnxruntime", "commit", "command"} <= set(header)
    assert (header["train"], header["val"], header["test"]) == (600, 100, 120)
    assert len(rows) == 12
    teacher, pruned, dropped = rows["teacher"], rows["pruned (heads + FFN)"], rows["dropped (top 2 layers)"]
    # half the heads and half the FFN neurons: about half the encoder's weights and MACs, for real
    assert 0.45 < pruned["encoder_params"] / teacher["encoder_params"] < 0.55
    assert pruned["macs_len128"] < 0.55 * teacher["macs_len128"]
    assert dropped["encoder_params"] == teacher["encoder_params"] // 2
    # attention grows with the square of the length: 128 tokens cost more than 4x 32 tokens
    assert teacher["macs_len128"] > 4 * teacher["macs_len32"]
    int8 = rows["2-layer hidden_kd s0 int8"]
    assert int8["encoder_params"] == rows["2-layer hidden_kd s0"]["encoder_params"]
    for name, row in rows.items():
        assert 0 <= row["test_accuracy"] <= 1 and row["latency_b1_len32_ms"] > 0, name
        if row["runtime"] == "ONNX Runtime":
            assert row["agreement"] >= 0.99, name
    targets = {t["target"]: t for t in header["targets"]}
    assert len(targets) == 6 and targets["heads+FFN pruning removes >= 40% of encoder parameters"]["met"]
    table = (out / "sst2.md").read_text()
    assert all(f"| {name} |" in table for name in rows) and "## Targets (issue 18)" in table
