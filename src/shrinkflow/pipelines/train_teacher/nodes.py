"""Teacher node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.stages import TeacherStage, train_or_load_teacher


def train_teacher(
    train: Split, val: Split, checkpoint: dict[str, Any] | None, cfg: TeacherStage
) -> ModelArtifact:
    """Build the configured architecture; load ``checkpoint`` if the user gave one, else train."""
    return train_or_load_teacher(train, val, checkpoint, cfg)
