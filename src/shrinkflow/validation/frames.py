"""Tables that the Great Expectations suites validate. Pure pandas and torch: no GX here.

GX validates tables, not image tensors, so each validated object is first turned into a frame:

- raw data (images): one row per sample (its label, pixel statistics over finite values, NaN and infinite
  counts, shape, and whole-set facts repeated on every row: the declared and the present number
  of classes, its class's share over an even share), so whole-set checks (row count, label set,
  class balance, one shape) and per-sample checks (value range, no NaN) are ordinary column checks;
- raw data (tables): one row per feature column (``validation.tables.column_stats``);
- the split: one row per split (size, its share of the pool against the configured share, samples
  whose content also occurs in another split);
- the evaluation: one row per stage (accuracy, drop versus the teacher, size and sparsity), the
  final model's row marked, so its size targets are checked with a ``row_condition``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch

from shrinkflow.core.data import DataError, RawData, Source, Split, modality
from shrinkflow.core.transforms import to_float
from shrinkflow.validation.tables import column_stats

__all__ = ["FRAMES", "data_modality", "quality_table", "sample_stats", "split_summary"]


#: samples read at once from an in-memory source
_CHUNK = 4096


def _pixel_stats(flat: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-row statistics of (n, pixels) values: min/max/mean over the finite ones, NaN and inf counts."""
    finite = torch.isfinite(flat)
    big = torch.finfo(flat.dtype).max
    # min/max/mean over the finite pixels only: NaN and inf are counted in their own columns
    lo = torch.where(finite, flat, torch.full_like(flat, big)).amin(1)
    hi = torch.where(finite, flat, torch.full_like(flat, -big)).amax(1)
    total = torch.where(finite, flat, torch.zeros_like(flat)).sum(1)
    return {
        "min": lo.numpy().astype(float),
        "max": hi.numpy().astype(float),
        "mean": (total / finite.sum(1).clamp(min=1)).numpy().astype(float),
        "nan_count": torch.isnan(flat).sum(1).numpy(),
        "inf_count": torch.isinf(flat).sum(1).numpy(),
    }


def _streamed_stats(source: Source) -> dict[str, np.ndarray]:
    """Per-sample statistics read chunk by chunk (an in-memory source) or image by image (files,
    whose sizes may differ): memory holds one chunk, never the data set."""
    columns: dict[str, list[np.ndarray]] = {}
    for chunk in source.chunks(_CHUNK):
        items = [chunk] if isinstance(chunk, torch.Tensor) else [x[None] for x in chunk]
        for batch in items:
            batch = to_float(batch)
            stats = _pixel_stats(batch.reshape(batch.shape[0], -1).float())
            c, h, w = (int(d) for d in batch.shape[1:]) if batch.ndim == 4 else (0, 0, 0)
            stats.update(channels=np.full(batch.shape[0], c), height=np.full(batch.shape[0], h),
                         width=np.full(batch.shape[0], w))  # fmt: skip
            for key, value in stats.items():
                columns.setdefault(key, []).append(value)
    return {key: np.concatenate(parts) for key, parts in columns.items()}


def _part_stats(source: Source, part: str) -> pd.DataFrame:
    n = len(source)
    labels = source.labels.numpy()
    counts = pd.Series(labels).value_counts()
    stats = _streamed_stats(source) if n else {
        k: np.zeros(0) for k in ("min", "max", "mean", "nan_count", "inf_count", "channels", "height", "width")
    }  # fmt: skip
    return pd.DataFrame(
        {
            "part": part,
            "sample": [f"{part}[{i}]" for i in range(n)],
            "label": labels,
            **{
                k: stats[k]
                for k in ("min", "max", "mean", "nan_count", "inf_count", "channels", "height", "width")
            },
            "num_classes": source.num_classes,
            # classes of 0..num_classes-1 that occur (labels outside that range are checked apart)
            "classes_present": int(((counts.index >= 0) & (counts.index < source.num_classes)).sum()),
            # this sample's class share over an even share: 1.0 everywhere for a balanced set
            "class_balance": (pd.Series(labels).map(counts) * source.num_classes / max(n, 1)).to_numpy(
                dtype=float
            ),
        }
    )


def sample_stats(raw: RawData) -> pd.DataFrame:
    """One row per sample of the pool (``part`` = ``data``) and of the fixed test set (``test``),
    computed streaming: a chunk of an in-memory source, or one image file, at a time."""
    parts = [_part_stats(raw.data, "data")]
    if raw.test is not None:
        parts.append(_part_stats(raw.test, "test"))
    return pd.concat(parts, ignore_index=True)


def text_stats(raw: RawData) -> pd.DataFrame:
    """One row per text of the pool (``data``) and of the fixed validation / test sets: ``tokens``
    (without ``[CLS]``), ``truncated`` (1 when cut at the tokenizer's ``max_length``), the label and
    the class columns of :func:`sample_stats`."""
    parts = []
    for part, source in (("data", raw.data), ("val", raw.val), ("test", raw.test)):
        if source is None:
            continue
        n = len(source)
        labels = source.labels.numpy()
        counts = pd.Series(labels).value_counts()
        lengths = source.lengths(torch.arange(n)).numpy()  # type: ignore[attr-defined]
        parts.append(
            pd.DataFrame(
                {
                    "part": part,
                    "sample": [f"{part}[{i}]" for i in range(n)],
                    "label": labels,
                    "tokens": lengths - 1,
                    "truncated": (lengths >= source.max_length).astype(int),  # type: ignore[attr-defined]
                    "num_classes": source.num_classes,
                    "classes_present": int(((counts.index >= 0) & (counts.index < source.num_classes)).sum()),
                    "class_balance": (
                        pd.Series(labels).map(counts) * source.num_classes / max(n, 1)
                    ).to_numpy(dtype=float),
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _fingerprints(split: Split) -> set[bytes]:
    if split.source.sequential:  # one pass over a stream, not one per chunk
        return set(split.source.content_keys(split.indices))
    keys: set[bytes] = set()
    for start in range(0, len(split), _CHUNK):
        keys.update(split.source.content_keys(split.indices[start : start + _CHUNK]))
    return keys


def split_summary(
    train: Split,
    val: Split,
    test: Split,
    *,
    val_fraction: float,
    test_fraction: float,
    fixed_test: bool,
    fixed_val: bool = False,
) -> pd.DataFrame:
    """One row per split: ``rows``; ``share`` of the pool the split was cut from (train + val, plus
    test when the test set was carved out of the data) against the configured ``expected_share``
    (empty for a data set's fixed validation or test set), ``share_error`` = their distance; ``shared_samples``:
    how many of its samples also occur, byte for byte, in another split (leakage, including
    duplicates in the source data: equal tensors, or equal files for a source of files);
    ``classes`` present."""
    splits = {"train": train, "val": val, "test": test}
    pool = len(train) + (0 if fixed_val else len(val)) + (0 if fixed_test else len(test))
    expected = {
        "train": 1.0 - (0.0 if fixed_val else val_fraction) - (0.0 if fixed_test else test_fraction),
        "val": None if fixed_val else val_fraction,
        "test": None if fixed_test else test_fraction,
    }
    prints = {name: _fingerprints(s) for name, s in splits.items()}
    rows = []
    for name, split in splits.items():
        others = set().union(*(p for other, p in prints.items() if other != name))
        share = len(split) / pool if pool else 0.0
        want = expected[name]
        rows.append(
            {
                "split": name,
                "rows": len(split),
                "share": share,
                "expected_share": np.nan if want is None else want,
                "share_error": np.nan if want is None else abs(share - want),
                "shared_samples": len(prints[name] & others),
                "classes": int(torch.unique(split.y).numel()),
            }
        )
    return pd.DataFrame(rows)


def quality_table(metrics: Mapping[str, Mapping[str, Any]], final: str) -> pd.DataFrame:
    """One row per evaluated stage, in order: ``accuracy``, ``accuracy_drop`` = teacher accuracy -
    the stage's (fractions), ``packed_bytes``, ``packed_compression_ratio`` (teacher packed bytes
    over the stage's), ``sparsity``, and ``final`` marking the model the size targets apply to."""
    needed = ("accuracy", "packed_bytes", "sparsity")
    for stage, values in metrics.items():
        missing = [k for k in needed if not isinstance(values.get(k), (int, float))]
        if missing:
            raise ValueError(
                f"quality table: stage {stage!r} metrics lack {missing}; expected {list(needed)}"
            )
    if "teacher" not in metrics:
        raise ValueError(
            f"quality table: no teacher metrics among {sorted(metrics)}; drops are measured from it"
        )
    if final not in metrics:
        raise ValueError(
            f"quality table: final={final!r} is not among the evaluated stages {sorted(metrics)}"
        )
    teacher = metrics["teacher"]
    return pd.DataFrame(
        [
            {
                "stage": stage,
                "accuracy": float(values["accuracy"]),
                "accuracy_drop": round(float(teacher["accuracy"]) - float(values["accuracy"]), 10),
                "packed_bytes": int(values["packed_bytes"]),
                "packed_compression_ratio": float(teacher["packed_bytes"]) / float(values["packed_bytes"]),
                "sparsity": float(values["sparsity"]),
                "final": stage == final,
            }
            for stage, values in metrics.items()
        ]
    )


def data_modality(data: Any) -> str | None:
    """``image``, ``table`` or ``text`` for raw data (what picks a suite's ``variants``); None otherwise."""
    if not isinstance(data, RawData):
        return None
    try:
        return modality(data.data)
    except DataError:
        return None


#: How a validated dataset becomes a frame, by the suite's ``frame`` key.
FRAMES = {
    "sample_stats": sample_stats,
    "column_stats": column_stats,
    "text_stats": text_stats,
    "table": lambda frame: frame,
}
