"""Export node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches
from shrinkflow.core.deploy import deploy, onnx_file
from shrinkflow.core.evaluation import evaluate_onnx
from shrinkflow.core.export import ExportConfig
from shrinkflow.core.measure import MeasureConfig


def export_model(
    model: ModelArtifact,
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    test: Split,
    cfg: ExportConfig,
    measure: MeasureConfig,
) -> tuple[bytes, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Measure the serving runtimes and keep the one chosen (``export.format``): the ONNX file and
    its run in ONNX Runtime beside the PyTorch model, the deployed model's folder, and every
    candidate's latency, throughput and agreement (``deployment``)."""
    calibration = list(calibration_batches(train, cfg.calibration_batches, cfg.batch_size))
    chosen = deploy(model, teacher, val, test, calibration, cfg, measure)
    exported = onnx_file(chosen, model, calibration, cfg, val.for_eval().head(2))
    summary = {**chosen.to_dict(), "artifact": f"model{chosen.served.suffix}"}
    deployed = {
        "data": chosen.served.data,
        "manifest": {k: summary[k] for k in ("runtime", "suffix", "chosen")},
    }
    return exported.data, evaluate_onnx(exported, model, test, measure), deployed, summary
