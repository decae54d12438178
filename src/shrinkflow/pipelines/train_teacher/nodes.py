"""Teacher node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import Checkpoint, ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.stages import TeacherStage, train_or_load_teacher


def train_teacher(
    train: Split, val: Split, checkpoint: Checkpoint | None, cfg: TeacherStage, runtime: RuntimeConfig
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Build the configured architecture; load ``checkpoint`` if the user gave one, else train.
    The record says which (method ``train`` or ``checkpoint`` with the file's path and sha256)."""
    return train_or_load_teacher(train, val, checkpoint, cfg, runtime)
