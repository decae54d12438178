"""TrackingHook writes only into the run its pipeline opened, and never starts one itself."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from shrinkflow.hooks import TrackingHook


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> mlflow.MlflowClient:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # runs below go to the Default experiment there
    yield mlflow.MlflowClient(uri)
    while mlflow.active_run():
        mlflow.end_run()


def test_metrics_go_to_the_pipelines_run_with_the_stage_prefix(store):
    hook = TrackingHook()
    with mlflow.start_run() as run:
        hook.before_pipeline_run({"pipeline_names": ["prune"]})
        hook.after_dataset_saved(
            "pruned_metrics", {"accuracy": 0.9, "sparsity": 0.7, "method": "agp", "x": float("nan")}
        )
    logged = store.get_run(run.info.run_id).data
    assert logged.metrics == {"pruned.accuracy": 0.9, "pruned.sparsity": 0.7}
    assert logged.tags["shrinkflow.version"]


def test_the_onnx_export_is_logged_as_onnx_metrics_with_its_format_and_qparams_as_tags(store):
    hook = TrackingHook()
    with mlflow.start_run() as run:
        hook.before_pipeline_run({"pipeline_names": ["export"]})
        hook.after_dataset_saved(
            "onnx_metrics",
            {"format": "int8", "qparams": "torch", "agreement": 0.9993, "onnx_bytes": 280715, "threads": 1},
        )
        # the report repeats the export under "onnx" in metrics.json: logged once, not twice
        hook.after_dataset_saved("metrics_json", {"onnx": {"status": "exported", "agreement": 0.9993}})
    logged = store.get_run(run.info.run_id).data
    assert logged.metrics == {"onnx.agreement": 0.9993, "onnx.onnx_bytes": 280715.0, "onnx.threads": 1.0}
    assert (logged.tags["onnx.format"], logged.tags["onnx.qparams"]) == ("int8", "torch")
    history = store.get_metric_history(run.info.run_id, "onnx.agreement")
    assert len(history) == 1


def test_the_deployment_is_logged_per_runtime_and_batch_with_the_choice_as_tags(store):
    hook = TrackingHook()
    row = {"latency_ms": 0.05, "speedup": 2.4, "val_agreement": 1.0, "description": "text", "eligible": True}
    with mlflow.start_run() as run:
        hook.before_pipeline_run({"pipeline_names": ["export"]})
        hook.after_dataset_saved(
            "deployment",
            {
                "runtime": "onnx_int8",
                "chosen": {"1": "onnx_int8", "256": "sparse_csr"},
                "candidates": [
                    {"runtime": "onnx_int8", "batch": 1, **row},
                    {"runtime": "sparse_csr", "batch": 256, **row, "speedup": 3.1},
                ],
            },
        )
    logged = store.get_run(run.info.run_id).data
    assert logged.metrics == {
        "deploy.onnx_int8.b1.latency_ms": 0.05,
        "deploy.onnx_int8.b1.speedup": 2.4,
        "deploy.onnx_int8.b1.val_agreement": 1.0,
        "deploy.sparse_csr.b256.latency_ms": 0.05,
        "deploy.sparse_csr.b256.speedup": 3.1,
        "deploy.sparse_csr.b256.val_agreement": 1.0,
    }
    assert (logged.tags["deploy.runtime"], logged.tags["deploy.chosen.b256"]) == ("onnx_int8", "sparse_csr")


def test_no_run_at_pipeline_start_means_nothing_is_logged_and_no_run_is_started(store):
    hook = TrackingHook()
    hook.before_pipeline_run({"pipeline_names": ["__default__"]})  # tracking off: no active run
    hook.after_dataset_saved("teacher_metrics", {"accuracy": 0.9})
    assert mlflow.active_run() is None
    with mlflow.start_run() as other:  # a run opened later by someone else is not written into
        hook.after_dataset_saved("teacher_metrics", {"accuracy": 0.9})
    assert store.get_run(other.info.run_id).data.metrics == {}


def test_the_quality_gates_outcome_is_a_tag(store, tmp_path):
    import pandas as pd
    import yaml

    from shrinkflow import validation

    suites = yaml.safe_load((Path(__file__).parents[1] / "conf/base/gx_suites.yml").read_text())
    suites["quality_gates"]["on_failure"] = "warn"
    table = pd.DataFrame(
        {
            "stage": ["teacher", "quantized"],
            "accuracy": [0.9, 0.85],
            "accuracy_drop": [0.0, 0.05],
            "packed_bytes": [100, 10],
            "packed_compression_ratio": [1.0, 10.0],
            "sparsity": [0.0, 0.5],
            "final": [False, True],
        }
    )
    hook = TrackingHook()
    try:
        for budget, tag in ((0.01, "failed: quantized"), (0.1, "passed")):
            validation.configure(
                validation.Validation(
                    tmp_path,
                    suites,
                    {
                        "gates": {
                            "max_accuracy_drop": budget,
                            "min_compression_ratio": None,
                            "max_packed_bytes": None,
                            "min_sparsity": None,
                        }
                    },
                )
            )
            validation.active().check("quality_gates", table, "quality_gates")
            with mlflow.start_run() as run:
                hook.before_pipeline_run({"pipeline_names": ["report"]})
                hook.after_dataset_saved("quality_gates", table)
            assert store.get_run(run.info.run_id).data.tags["quality_gates"] == tag
    finally:
        validation.configure(None)
