"""Quantize node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.stages import QuantizeStage, run_method


def quantize_model(
    model: ModelArtifact, train: Split, val: Split, cfg: QuantizeStage
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Apply the configured quantizer; ``train`` serves as calibration data for methods that need it."""
    return run_method(cfg, model, train, val)
