"""Data nodes."""

from __future__ import annotations

import pandas as pd

from shrinkflow.core.data import RawData, Split
from shrinkflow.stages import DataStage, split
from shrinkflow.validation.frames import split_summary


def split_data(raw: RawData, cfg: DataStage, seed: int) -> tuple[Split, Split, Split, pd.DataFrame]:
    """Check the raw data (shapes, dtypes, NaN, label range) and split it into train/val/test; the
    summary (sizes, shares, leakage between splits) is what the ``split`` suite validates."""
    train, val, test = split(raw, cfg, seed)
    summary = split_summary(
        train,
        val,
        test,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        fixed_test=raw.test is not None,
        fixed_val=raw.val is not None,
    )
    return train, val, test, summary
