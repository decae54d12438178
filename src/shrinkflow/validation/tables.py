"""The frame the ``raw_data_table`` suite checks: one row per feature column of a table.

Pure pandas and torch: no GX here. Each row is one column of one part (``data``: the pool,
``test``: a fixed test set), named ``<part>.<column>`` so a failing check names the column:
NaN and infinite counts and finite min / max / mean / std of that column, with the part's
whole-set facts repeated on every row (rows, label range, declared and present classes, the
rarest and the commonest class's share over an even share), as ``sample_stats`` does for images.
Values are not range-checked: table features come in their own units (standardization is the
model's, fitted on the training split).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from shrinkflow.core.data import RawData, TensorSource

__all__ = ["column_stats"]


def _finite_stats(x: torch.Tensor) -> dict[str, np.ndarray]:
    values = x.double().numpy()
    finite = np.isfinite(values)
    masked = np.where(finite, values, np.nan)
    frame = pd.DataFrame(masked)  # pandas skips NaN: statistics over the finite values only
    return {
        "min": frame.min().to_numpy(dtype=float),
        "max": frame.max().to_numpy(dtype=float),
        "mean": frame.mean().to_numpy(dtype=float),
        "std": frame.std(ddof=0).to_numpy(dtype=float),
        "nan_count": np.isnan(values).sum(0),
        "inf_count": np.isinf(values).sum(0),
    }


def _part_columns(split: TensorSource, part: str, names: tuple[str, ...] | None) -> pd.DataFrame:
    n, n_features = split.x.shape[0], int(split.x.shape[1]) if split.x.ndim == 2 else 0
    x = split.x.reshape(n, n_features)
    names = names or tuple(f"x[:, {i}]" for i in range(n_features))
    labels = split.y.numpy()
    counts = pd.Series(labels).value_counts()
    inside = counts[(counts.index >= 0) & (counts.index < split.num_classes)]
    share = inside.reindex(range(split.num_classes), fill_value=0) * split.num_classes / max(n, 1)
    return pd.DataFrame(
        {
            "part": part,
            "column": [f"{part}.{name}" for name in names],
            **_finite_stats(x),
            "rows": n,
            "label_min": int(labels.min()) if n else 0,
            "label_max": int(labels.max()) if n else 0,
            "num_classes": split.num_classes,
            "classes_present": len(inside),
            "class_balance_min": float(share.min()) if n else 0.0,
            "class_balance_max": float(share.max()) if n else 0.0,
        }
    )


def column_stats(raw: RawData) -> pd.DataFrame:
    """One row per feature column of the pool (``data.<name>``) and of the fixed test set."""
    parts = [_part_columns(raw.data, "data", raw.feature_names)]
    if raw.test is not None:
        parts.append(_part_columns(raw.test, "test", raw.feature_names))
    return pd.concat(parts, ignore_index=True)
