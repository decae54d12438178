"""Each node on a tiny real fixture, and its error paths."""

from __future__ import annotations

import hashlib
import io

import pandas as pd
import pytest
import torch

from shrinkflow.core.artifact import ArtifactError, Checkpoint, read_checkpoint
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import DataError, RawData, TensorSource
from shrinkflow.core.export import ExportConfig
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.pipelines.data.nodes import split_data
from shrinkflow.pipelines.distill.nodes import distill_model
from shrinkflow.pipelines.evaluate.nodes import evaluate_model
from shrinkflow.pipelines.export.nodes import export_model
from shrinkflow.pipelines.prune.nodes import prune_model
from shrinkflow.pipelines.quantize.nodes import quantize_model
from shrinkflow.pipelines.report.nodes import report
from shrinkflow.pipelines.train_teacher.nodes import train_teacher
from shrinkflow.stages import DataStage, DistillStage, PruneStage, QuantizeStage, TeacherStage

SMALL = {"name": "mlp", "kwargs": {"mlp": {"hidden": [32]}}}
FAST = MeasureConfig(warmup=1, latency_runs=3, throughput_runs=2)
#: the runtime block the nodes get (params:runtime); the CPU, so the numbers below are the same on any machine
RUN = RuntimeConfig(device="cpu")


@pytest.fixture(scope="module")
def teacher(digits_splits):
    train, val, _ = digits_splits
    artifact, record = train_teacher(
        train, val, None, TeacherStage(model=SMALL, train={"epochs": 15, "lr": 0.003}), RUN
    )
    assert record["method"] == "train" and len(record["history"]) == 15
    return artifact


def test_split_data_rejects_nan_and_out_of_range_labels():
    x = torch.rand(20, 1, 8, 8)
    y = torch.arange(20) % 10
    x[3, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="1 NaN"):
        split_data(RawData("bad", TensorSource(x, y, 10)), DataStage(), seed=0)
    y[0] = 12
    with pytest.raises(DataError, match=r"labels range over \[0, 12\]; expected 0 <= label < 10"):
        split_data(RawData("bad", TensorSource(torch.rand(20, 1, 8, 8), y, 10)), DataStage(), seed=0)


def test_teacher_node_trains_to_high_accuracy(teacher, digits_splits):
    *_, test = digits_splits
    metrics = evaluate_model(teacher, teacher, test, FAST, RUN)
    assert metrics["accuracy"] > 0.9
    assert metrics["params_total"] == 64 * 32 + 32 + 32 * 10 + 10
    assert metrics["macs"] == metrics["macs_nonzero"] == 64 * 32 + 32 * 10
    assert metrics["teacher_agreement"] == 1.0
    assert metrics["accuracy"] <= metrics["top5_accuracy"] <= 1.0
    # noise hurts, more noise hurts more (the same seeded noise for every model)
    assert metrics["accuracy"] >= metrics["accuracy_noise_0.1"] >= metrics["accuracy_noise_0.3"]
    assert metrics["accuracy_noise_0.3"] < metrics["accuracy"] - 0.02


def test_teacher_node_loads_a_checkpoint_instead_of_training(teacher, digits_splits, tmp_path):
    train, val, test = digits_splits
    cfg = TeacherStage(model=SMALL, train={"epochs": 15, "lr": 0.003})
    torch.save(teacher.model.state_dict(), tmp_path / "mine.pt")
    checkpoint = read_checkpoint(tmp_path / "mine.pt")
    loaded, record = train_teacher(train, val, checkpoint, cfg, RUN)
    assert torch.equal(loaded.model(test.x), teacher.model(test.x))
    digest = hashlib.sha256((tmp_path / "mine.pt").read_bytes()).hexdigest()
    assert record == {
        "stage": "train_teacher",
        "status": "done",
        "model": {"name": "mlp", "kwargs": {"hidden": [32]}},
        "method": "checkpoint",
        "checkpoint": str(tmp_path / "mine.pt"),
        "sha256": digest,
    }
    wrong = Checkpoint({"0.weight": torch.zeros(3, 3)}, "wrong.pt", "0" * 64)
    with pytest.raises(ArtifactError, match="missing keys"):
        train_teacher(train, val, wrong, cfg, RUN)


def test_prune_node_hits_target_sparsity_and_leaves_teacher_untouched(teacher, digits_splits):
    train, val, test = digits_splits
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    pruned, record = prune_model(
        teacher,
        train,
        val,
        PruneStage(method="magnitude", options={"magnitude": {"sparsity": 0.75}}, finetune={"epochs": 2}),
        RUN,
    )
    metrics = evaluate_model(pruned, teacher, test, FAST, RUN)
    weights = 64 * 32 + 32 * 10
    assert metrics["params_total"] - metrics["params_nonzero"] >= int(0.75 * weights)
    assert metrics["macs"] == weights and metrics["macs_nonzero"] <= 0.25 * weights + 1
    assert 0.8 < metrics["teacher_agreement"] < 1.0
    assert record["status"] == "done" and record["plugin"]["distribution"] == "shrinkflow"
    assert len(record["history"]) == 2
    assert all(torch.equal(before[k], v) for k, v in teacher.model.state_dict().items())
    assert pruned.recipe[-1]["method"] == "magnitude"


def test_method_none_passes_the_model_through(teacher, digits_splits):
    train, val, _ = digits_splits
    out, record = prune_model(teacher, train, val, PruneStage(method="none"), RUN)
    assert out is teacher and record == {"stage": "prune", "method": "none", "status": "skipped"}


def test_distill_into_pruned_student_keeps_its_zeros(teacher, digits_splits):
    train, val, _ = digits_splits
    pruned, _ = prune_model(
        teacher, train, val, PruneStage(method="magnitude", options={"magnitude": {"sparsity": 0.6}}), RUN
    )
    zeros = [m.weight == 0 for m in pruned.model if isinstance(m, torch.nn.Linear)]
    student, _ = distill_model(
        teacher, pruned, train, val, DistillStage(method="soft_kd", train={"epochs": 2}), RUN
    )
    after = [m.weight for m in student.model if isinstance(m, torch.nn.Linear)]
    assert all(bool((w[z] == 0).all()) for w, z in zip(after, zeros, strict=True))
    assert not any(hasattr(m, "weight_orig") for m in student.model.modules())
    assert [s["method"] for s in student.recipe] == ["magnitude", "soft_kd"]


def test_distill_into_a_declared_smaller_student(teacher, digits_splits):
    train, val, test = digits_splits
    cfg = DistillStage(
        method="soft_kd",
        student={"name": "mlp", "kwargs": {"mlp": {"hidden": [16]}}},
        train={"epochs": 15, "lr": 0.003},
    )
    student, _ = distill_model(teacher, teacher, train, val, cfg, RUN)
    assert student.spec.kwargs == {"hidden": [16]} and student.recipe[0]["method"] == "soft_kd"
    assert evaluate_model(student, teacher, test, FAST, RUN)["accuracy"] > 0.85


def _mlp_teacher(digits_splits, hidden: int, epochs: int):
    train, val, _ = digits_splits
    stage = TeacherStage(
        model={"name": "mlp", "kwargs": {"mlp": {"hidden": [hidden]}}}, train={"epochs": epochs}
    )
    return train_teacher(train, val, None, stage, RUN)[0]


def test_quantize_node_shrinks_the_artifact(digits_splits):
    train, val, test = digits_splits
    teacher = _mlp_teacher(digits_splits, hidden=256, epochs=3)
    quantized, _ = quantize_model(teacher, teacher, train, val, QuantizeStage(method="dynamic_int8"), RUN)
    before, after = (
        evaluate_model(teacher, teacher, test, FAST, RUN),
        evaluate_model(quantized, teacher, test, FAST, RUN),
    )
    assert after["artifact_bytes"] < before["artifact_bytes"] / 3
    assert after["macs"] == before["macs"] == 64 * 256 + 256 * 10  # int8 kernels counted too
    assert after["teacher_agreement"] >= 0.97
    assert abs(after["accuracy"] - before["accuracy"]) <= 0.02


@pytest.mark.parametrize(
    ("stage", "params", "message"),
    [
        (
            PruneStage,
            {"method": "magnitude", "options": {"magnitude": {"sparsity": 1.5}}},
            r"prune.options.magnitude.sparsity=1.5 .*0.0 <= sparsity < 1.0",
        ),
        (PruneStage, {"method": "nope"}, r"prune.method='nope'.*available pruners are \[.*'magnitude'"),
        (PruneStage, {"method": "magnitude", "finetune": {"epochs": -1}}, r"prune.finetune.epochs=-1"),
        (
            DistillStage,
            {"method": "soft_kd", "options": {"soft_kd": {"alpha": 2}}},
            r"distill.options.soft_kd.alpha=2 .*0.0 <= alpha <= 1.0",
        ),
        (DistillStage, {"method": "none", "student": {"name": "mlp"}}, r"distill.method='none'"),
        (DistillStage, {"student": "teacher"}, r"distill.student='teacher'"),
        (
            QuantizeStage,
            {"method": "dynamic_int8", "options": {"dynamic_int8": {"engine": "tpu"}}},
            r"quantize.options.dynamic_int8.engine='tpu'",
        ),
        (TeacherStage, {"model": {"name": "resnet9000"}}, r"unknown model 'resnet9000'.*'lenet5'"),
        (DataStage, {"val_fraction": 0.9}, r"data.val_fraction=0.9 .*0.0 < val_fraction <= 0.5"),
    ],
)
def test_stage_configs_name_key_value_and_range(stage, params, message):
    with pytest.raises((ConfigError, LookupError), match=message):
        stage(**params)


def test_export_node_writes_int8_onnx_that_agrees_with_the_quantized_model(digits_splits):
    train, val, test = digits_splits
    teacher = _mlp_teacher(digits_splits, hidden=128, epochs=5)
    quantized, _ = quantize_model(teacher, teacher, train, val, QuantizeStage(method="dynamic_int8"), RUN)
    data, metrics, deployed, deployment = export_model(
        quantized, teacher, train, val, test, ExportConfig(format="int8", rounds=1), FAST
    )
    assert deployment["runtime"] == "onnx_int8" and deployed["manifest"]["suffix"] == ".onnx"
    assert deployed["data"] == data  # format int8: the served file is the ONNX file
    assert {r["runtime"] for r in deployment["candidates"]} >= {"eager", "onnx_fp32", "onnx_int8"}
    assert deployment["skipped"]["sparse_csr"] == "no float Linear layer is at least 50% sparse"
    assert data[:2] == b"\x08\x0a"  # an ONNX ModelProto (ir_version field first)
    assert metrics["format"] == "int8" and metrics["onnx_bytes"] == len(data)
    assert metrics["agreement"] >= 0.99 and metrics["test_samples"] == len(test)
    assert metrics["disagreements"] == round((1 - metrics["agreement"]) * len(test))
    assert abs(metrics["accuracy"] - evaluate_model(quantized, teacher, test, FAST, RUN)["accuracy"]) <= 0.01
    assert metrics["latency_b1_p50_ms"] <= metrics["latency_b1_p95_ms"] and metrics["throughput_b256_sps"] > 0


def _markdown_rows(markdown: str) -> list[list[str]]:
    """The cells of every Markdown table row (separator rows left out), stripped of padding."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith("|") and not set(line) <= set("|:- ")
    ]


def test_report_marks_skipped_stages_and_computes_ratios():
    base = {
        "accuracy": 0.98,
        "artifact_bytes": 400,
        "packed_bytes": 390,
        "params_nonzero": 10,
        "sparsity": 0.0,
        "latency_b1_p50_ms": 0.2,
        "latency_b1_p95_ms": 0.3,
        "throughput_b256_sps": 9000.0,
        "layer_sparsity": {"1.weight": 0.0, "3.weight": 0.0},
    }
    small = {
        **base,
        "accuracy": 0.975,
        "artifact_bytes": 100,
        "packed_bytes": 30,
        "latency_b1_p50_ms": 0.1,
        "layer_sparsity": {"1.weight": 0.9, "3.weight": 0.5},
    }
    document, markdown, table, figure, speed, sparsity = report(
        base,
        base,
        small,
        small,
        {"method": "checkpoint", "status": "done", "checkpoint": "mine.pt", "sha256": "ab" * 32},
        {"method": "none", "status": "skipped"},
        {"method": "soft_kd", "status": "done"},
        {"method": "dynamic_int8", "status": "done"},
        pd.DataFrame(
            {
                "stage": ["teacher", "pruned", "distilled", "quantized"],
                "accuracy_drop": [0.0, 0.0, 0.005, 0.005],
                "failed_checks": [
                    "",
                    "",
                    "",
                    "accuracy_drop: expect_column_values_to_be_between(max_value=0.001)",
                ],
            }
        ),
        {
            "format": "int8",
            "onnx_bytes": 80,
            "accuracy": 0.975,
            "agreement": 0.999,
            "disagreements": 1,
            "test_samples": 1000,
            "latency_b1_p50_ms": 0.05,
            "latency_b1_p95_ms": 0.06,
            "throughput_b256_sps": 18000.0,
            "threads": 1,
        },
        {
            "reference": "the final model in PyTorch",
            "selection_split": "validation",
            "min_agreement": 0.999,
            "threads": 1,
            "serve_batch": 1,
            "runtime": "onnx_int8",
            "artifact": "model.onnx",
            "chosen": {"1": "onnx_int8", "256": "sparse_csr"},
            "candidates": [
                {
                    "runtime": r,
                    "batch": b,
                    "latency_ms": ms,
                    "throughput_sps": b / ms * 1e3,
                    "speedup": x,
                    "val_agreement": agree,
                    "test_agreement": agree,
                    "test_accuracy": 0.97,
                    "eligible": agree >= 0.999,
                    "chosen": chosen,
                }
                for r, b, ms, x, agree, chosen in [
                    ("eager", 1, 0.2, 1.0, 1.0, False),
                    ("onnx_int8", 1, 0.05, 4.0, 0.9995, True),
                    ("sparse_csr", 256, 10.0, 3.0, 1.0, True),
                    ("onnx_int8", 256, 5.0, 6.0, 0.99, False),
                ]
            ],
        },
    )
    rows = _markdown_rows(markdown)
    assert [
        "quantized",
        "+0.50",
        "**FAILED**: accuracy_drop: expect_column_values_to_be_between(max_value=0.001)",
    ] in rows
    assert ["distilled", "+0.50", "passed"] in rows and "1 of 4 stages failed a gate" in markdown
    assert document["pruned"] == {"status": "skipped", "method": "none"}
    assert document["teacher"]["method"] == "checkpoint"
    assert document["teacher"]["checkpoint_sha256"] == "ab" * 32
    assert f"loaded from `mine.pt` (sha256 `{'ab' * 32}`)" in markdown
    assert any(row[:2] == ["teacher", "checkpoint"] for row in rows)
    assert document["quantized"]["compression_ratio"] == 4.0
    assert document["quantized"]["packed_compression_ratio"] == 13.0
    assert document["quantized"]["accuracy_delta_pp"] == pytest.approx(-0.5)
    assert any(row[:3] == ["pruned", "none", "skipped"] for row in rows)
    assert list(table["stage"]) == ["teacher", "pruned", "distilled", "quantized"]
    # the plot: packed and artifact sizes, the three evaluated stages each, skipped ones left out
    packed, on_disk = figure.axes
    assert packed.get_xlabel().startswith("packed_bytes") and on_disk.get_xlabel().startswith(
        "artifact_bytes"
    )
    sizes = sorted(float(x) for c in packed.collections for x, _ in c.get_offsets())
    assert sizes == [30.0, 30.0, 390.0]
    latency, throughput = speed.axes
    # evaluated stages and the ONNX export; skipped ones left out
    assert [round(p.get_height(), 3) for p in latency.patches] == [0.2, 0.1, 0.1, 0.05]
    assert [p.get_height() for p in throughput.patches] == [9000.0] * 3 + [18000.0]
    assert document["onnx"]["status"] == "exported" and "onnx" not in set(table["stage"])
    assert "agree with the PyTorch model's on 99.90% of the test set (1 of 1000 differ)" in markdown
    assert ["ONNX Runtime (int8)", "0.9750", "0.050", "4.00x", "18,000", "2.00x"] in rows
    assert ["final model (PyTorch)", "0.9750", "0.100", "2.00x", "9,000", "1.00x"] in rows
    # the stage table's throughput column is named by the batch the metrics carry
    assert "throughput b256 (samples/s)" in _markdown_rows(markdown)[0]
    # the deployment: every candidate with its agreement, the choice per batch size
    assert "deployment" not in document  # its own file, deployment.json
    assert "Serving: `onnx_int8` at batch 1, `sparse_csr` at batch 256" in markdown
    assert ["`onnx_int8`", "256", "5.000", "51,200", "6.00x", "99.00%", "99.00%", "0.9700", "no", ""] in rows
    assert [
        "`sparse_csr`",
        "256",
        "10.000",
        "25,600",
        "3.00x",
        "100.00%",
        "100.00%",
        "0.9700",
        "yes",
        "**yes**",
    ] in rows
    heights = [round(p.get_height(), 2) for p in sparsity.axes[0].patches]
    assert sorted(heights) == [0.0, 0.0, 0.5, 0.5, 0.9, 0.9]
    assert "layer_sparsity" not in table.columns
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert buffer.getvalue()[:4] == b"\x89PNG"
