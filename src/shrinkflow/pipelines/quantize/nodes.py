"""Quantize node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.stages import QuantizeStage, run_method


def quantize_model(
    model: ModelArtifact,
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    cfg: QuantizeStage,
    runtime: RuntimeConfig,
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Apply the configured quantizer. ``train`` is calibration data for post-training methods and
    training data (with ``cfg.finetune``) for QAT and weight sharing; the teacher gives soft targets."""
    assert not isinstance(cfg.finetune, dict)
    return run_method(cfg, model, train, val, train_cfg=cfg.finetune, teacher=teacher, run=runtime)
