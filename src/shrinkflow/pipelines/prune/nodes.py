"""Prune node."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.runtime import RuntimeConfig
from shrinkflow.stages import PruneStage, run_method


def prune_model(
    teacher: ModelArtifact, train: Split, val: Split, cfg: PruneStage, runtime: RuntimeConfig
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Apply the configured pruner to a copy of the teacher, fine-tuning with ``cfg.finetune``."""
    assert not isinstance(cfg.finetune, dict)
    return run_method(cfg, teacher, train, val, train_cfg=cfg.finetune, run=runtime)
