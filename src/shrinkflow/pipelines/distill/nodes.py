"""Distill node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.stages import DistillStage, distill


def distill_model(
    teacher: ModelArtifact,
    pruned: ModelArtifact,
    train: Split,
    val: Split,
    cfg: DistillStage,
    runtime: RuntimeConfig,
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Train the student (the pruned model, or ``cfg.student``) under the teacher."""
    return distill(teacher, pruned, train, val, cfg, runtime)
