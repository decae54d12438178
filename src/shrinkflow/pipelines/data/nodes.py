"""Data nodes."""

from __future__ import annotations

from shrinkflow.core.data import RawData, Split
from shrinkflow.stages import DataStage, split


def split_data(raw: RawData, cfg: DataStage, seed: int) -> tuple[Split, Split, Split]:
    """Check the raw data (shapes, dtypes, NaN, label range) and split it into train/val/test."""
    return split(raw, cfg, seed)
