"""Evaluate node (one template, instantiated per stage)."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.evaluation import evaluate_artifact
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.runtime import RuntimeConfig


def evaluate_model(
    model: ModelArtifact, teacher: ModelArtifact, test: Split, cfg: MeasureConfig, runtime: RuntimeConfig
) -> dict[str, Any]:
    """Accuracy (top-1, top-5, under input noise), agreement with the teacher, parameters, MACs,
    sparsity, artifact and packed bytes, latency and throughput on the test set; accuracies on the
    run's device (CPU timings always, GPU timings too on a GPU)."""
    return evaluate_artifact(model, test, cfg, teacher=teacher, runtime=runtime.resolve())
