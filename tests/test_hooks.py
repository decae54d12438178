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


def test_no_run_at_pipeline_start_means_nothing_is_logged_and_no_run_is_started(store):
    hook = TrackingHook()
    hook.before_pipeline_run({"pipeline_names": ["__default__"]})  # tracking off: no active run
    hook.after_dataset_saved("teacher_metrics", {"accuracy": 0.9})
    assert mlflow.active_run() is None
    with mlflow.start_run() as other:  # a run opened later by someone else is not written into
        hook.after_dataset_saved("teacher_metrics", {"accuracy": 0.9})
    assert store.get_run(other.info.run_id).data.metrics == {}
