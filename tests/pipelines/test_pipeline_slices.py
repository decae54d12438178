"""Pipeline slices run by Kedro's SequentialRunner on an in-memory catalog (no files, no hooks)."""

from __future__ import annotations

import re

import pytest
from kedro.framework.project import configure_project
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from shrinkflow.core import openvino
from shrinkflow.core.datasets import digits
from shrinkflow.core.export import ExportConfig
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.pipeline_registry import register_pipelines
from shrinkflow.stages import DataStage, DistillStage, GateStage, PruneStage, QuantizeStage, TeacherStage


@pytest.fixture(scope="module", autouse=True)
def _project() -> None:
    configure_project("shrinkflow")


def _catalog(**overrides: object) -> DataCatalog:
    params = {
        "raw_data": digits(),
        "teacher_checkpoint": None,
        "params:seed": 0,
        "params:data": DataStage(),
        "params:train_teacher": TeacherStage(
            model={"name": "mlp", "kwargs": {"mlp": {"hidden": [64]}}}, train={"epochs": 10, "lr": 0.003}
        ),
        "params:prune": PruneStage(
            method="magnitude", options={"magnitude": {"sparsity": 0.7}}, finetune={"epochs": 2}
        ),
        "params:distill": DistillStage(method="soft_kd", train={"epochs": 2}),
        "params:quantize": QuantizeStage(method="dynamic_int8"),
        "params:evaluate": MeasureConfig(warmup=1, latency_runs=3, throughput_runs=2),
        "params:gates": GateStage(max_accuracy_drop=0.05),
        "params:export": ExportConfig(format="int8", rounds=1),
        "params:runtime": RuntimeConfig(device="cpu"),
        **overrides,
    }
    return DataCatalog({name: MemoryDataset(value, copy_mode="assign") for name, value in params.items()})


def _run(pipeline, catalog: DataCatalog) -> DataCatalog:
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_data_to_prune_slice():
    pipes = register_pipelines()
    catalog = _run(pipes["data"] + pipes["train_teacher"] + pipes["prune"], _catalog())
    # the record went to its history node (and was released); the table is what is left of it
    pruned, history = catalog.load("pruned_model"), catalog.load("prune_history")
    assert history["step"].tolist() == [1, 2] and history["val_accuracy"].iloc[-1] > 0.85
    assert history["val_loss"].notna().all() and history["lr"].iloc[0] == pytest.approx(1e-3)
    zeros = sum(int((p == 0).sum()) for n, p in pruned.model.named_parameters() if n.endswith("weight"))
    assert zeros >= int(0.7 * (64 * 64 + 64 * 10))


def test_full_default_pipeline_produces_one_row_per_stage():
    catalog = _run(register_pipelines()["__default__"], _catalog())
    document = catalog.load("metrics_json")
    assert list(document) == ["teacher", "pruned", "distilled", "quantized", "onnx"]
    # format int8 (the catalog's): the int8 ONNX file serves, whatever this CPU runs fastest
    assert document["onnx"]["format"] == "int8" and document["onnx"]["agreement"] >= 0.99
    assert catalog.load("onnx_model")[:2] == b"\x08\x0a"
    for stage in (document[s] for s in ("teacher", "pruned", "distilled", "quantized")):
        for key in (
            "accuracy",
            "loss",
            "params_total",
            "params_nonzero",
            "sparsity",
            "artifact_bytes",
            "compression_ratio",
            "latency_b1_p50_ms",
            "throughput_b256_sps",
        ):
            assert key in stage, key
    assert document["teacher"]["accuracy"] > 0.9
    assert document["quantized"]["compression_ratio"] > 2.0  # tiny model: fixed overhead weighs more
    assert re.search(r"^\| quantized +\| dynamic_int8 +\|", catalog.load("report_md"), re.MULTILINE)
    assert "## Quality gates" in catalog.load("report_md")  # computed; no hooks here, so not validated
    summary = catalog.load("split_summary").set_index("split")
    assert summary["rows"].sum() == 1797 and summary["shared_samples"].sum() == 0


def test_all_compression_stages_off_still_runs():
    catalog = _catalog(
        **{
            "params:prune": PruneStage(method="none"),
            "params:distill": DistillStage(method="none"),
            "params:quantize": QuantizeStage(method="none"),
            "params:export": ExportConfig(rounds=1),  # auto: measured
        }
    )
    catalog = _run(register_pipelines()["__default__"], catalog)
    document, report = catalog.load("metrics_json"), catalog.load("report_md")
    assert document["teacher"]["status"] == "done"
    assert all(
        document[s] == {"status": "skipped", "method": "none"} for s in ("pruned", "distilled", "quantized")
    )
    # nothing quantized: the teacher itself is served, on the runtime measured fastest among those
    # agreeing with it on >= 99.9% of validation; the ONNX file is that runtime's (else the float export)
    served = re.search(r"Serving: `(\w+)` at batch 1", report).group(1)
    rows = [re.split(r" *\| *", line.strip("| ")) for line in report.splitlines() if line.startswith("| `")]
    extra = {"`openvino_int8`"} if openvino.unavailable() is None else set()  # the optional extra
    assert {row[0] for row in rows} == {
        "`eager`",
        "`onnx_fp32`",
        "`onnx_int8`",
        *extra,
    }  # sparse_csr: not sparse
    assert document["onnx"]["format"] == ("int8" if served == "onnx_int8" else "float")
    assert document["onnx"]["agreement"] >= 0.99
