"""Export node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches
from shrinkflow.core.evaluation import evaluate_onnx
from shrinkflow.core.export import ExportConfig, export_artifact
from shrinkflow.core.measure import MeasureConfig


def export_onnx(
    model: ModelArtifact, train: Split, test: Split, cfg: ExportConfig, measure: MeasureConfig
) -> tuple[bytes, dict[str, Any]]:
    """The ONNX file, and the export run in ONNX Runtime beside the PyTorch model: accuracy,
    agreement of predictions, size, latency and throughput."""
    calibration = calibration_batches(train, cfg.calibration_batches, cfg.batch_size)
    exported = export_artifact(model, test.for_eval().head(2), calibration, cfg)
    return exported.data, evaluate_onnx(exported, model, test, measure)
