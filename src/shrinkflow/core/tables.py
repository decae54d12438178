"""Tabular data: (N, F) feature arrays, the ``table`` data-set plugin (CSV / Parquet) and the
input standardization that travels with the model.

Where standardization lives, and why: per-feature mean and standard deviation are fitted on the
*training split* by the stage that builds the model, and held as buffers of a
:class:`Standardize` module in front of it (:class:`Standardized`). The splits stay as the data
set delivered them; the model takes raw features. So a saved artifact, its ONNX export and the
MLflow model all apply the same statistics at inference with nothing to carry beside them, and
every stage (evaluation, calibration, distillation) feeds every model the same tensors. The
statistics are in the ``state_dict`` and the structure follows from the :class:`ModelSpec`
(``standardize: true``), so an artifact rebuilds in a fresh process like any other.

Compression methods see a module without Linear or Conv layers: pruning and weight quantizers
leave it alone, and torch FX traces straight through its ``(x - mean) / std`` (subtraction and
division have no int8 kernels), so static int8 quantizes the *standardized* activations in front
of the first Linear, not the raw features (whose ranges differ by orders of magnitude).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from shrinkflow.core.data import DataError, RawData, Split, TensorSource

__all__ = ["Standardize", "Standardized", "feature_array", "fit_standardization", "table"]


class Standardize(nn.Module):
    """``(x - mean) / std`` per feature; buffers (in the state_dict), fitted by :meth:`fit`."""

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        shape = tuple(int(d) for d in input_shape)
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def fit(self, x: torch.Tensor) -> Standardize:
        """Statistics of ``x`` (N, *input_shape); a constant feature keeps std 1 (it becomes 0)."""
        x = x.double()
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(x.mean(dim=0).to(self.mean.dtype))
        self.std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)).to(self.std.dtype))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Standardized(nn.Module):
    """``model(standardize(x))``: what ``build_model`` returns for ``ModelSpec(standardize=True)``."""

    def __init__(self, model: nn.Module, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.standardize = Standardize(input_shape)
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(self.standardize(x))


def fit_standardization(model: nn.Module, train: Split) -> bool:
    """Fit every :class:`Standardize` in ``model`` on the training split; True if one was. Table rows
    are held in memory (:class:`~shrinkflow.core.data.TensorSource`), so the split's rows are read
    at once; a model without standardization reads nothing."""
    found = [m for m in model.modules() if isinstance(m, Standardize)]
    if found:
        x = train.x
        for module in found:
            module.fit(x)
    return bool(found)


def feature_array(x: np.ndarray, where: str) -> torch.Tensor:
    """A numeric (N, F) array -> float32 tensor; values as they are (no scaling)."""
    if x.ndim != 2:
        raise DataError(f"{where}: features have shape {x.shape}; expected (N, F)")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: features have dtype {x.dtype}; expected numbers (integers or floats)")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


_READERS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def _read(path: Path, file_format: str | None, read_args: dict[str, Any]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"table {str(path)!r} does not exist")
    kind = file_format or _READERS.get(path.suffix.lower())
    if kind not in ("csv", "parquet"):
        raise DataError(
            f"table {str(path)!r}: format {kind or path.suffix!r} is unknown; expected format: csv | "
            f"parquet, or a file ending in {sorted(_READERS)}"
        )
    try:
        if kind == "csv":
            return pd.read_csv(path, **read_args)
        return pd.read_parquet(path, **read_args)
    except Exception as exc:  # pandas / pyarrow raise many types for unreadable files
        raise DataError(
            f"table {str(path)!r} cannot be read as {kind}: {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


def _feature_matrix(frame: pd.DataFrame, columns: list[str], where: str) -> np.ndarray:
    for column in columns:
        values = frame[column]
        if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = values[numeric.isna() & values.notna()]
            example = f"{bad.tolist()[0]!r} in row {bad.index[0]}" if len(bad) else f"dtype {values.dtype}"
            raise DataError(
                f"{where}: feature column {column!r} holds non-numeric values ({example}); expected "
                "numbers (encode categories as numbers, or leave the column out of `features`)"
            )
        missing = values.isna()
        if missing.any():
            rows = list(frame.index[missing][:3])
            raise DataError(
                f"{where}: feature column {column!r} has {int(missing.sum())} missing (NaN) values, "
                f"e.g. in rows {rows}; expected a number in every row (fill or drop them first)"
            )
    return frame[columns].to_numpy(dtype=np.float64)


def _label_codes(values: pd.Series, classes: list[Any] | None, where: str) -> tuple[np.ndarray, list[Any]]:
    """Integer labels as they are; other labels (names) as indices into their sorted set."""
    if values.isna().any():
        rows = list(values.index[values.isna()][:3])
        raise DataError(
            f"{where}: label column has missing values in rows {rows}; expected a label in every row"
        )
    if pd.api.types.is_integer_dtype(values) and classes is None:
        return values.to_numpy(dtype=np.int64), []
    if pd.api.types.is_float_dtype(values) and classes is None:
        if not np.all(np.mod(values.to_numpy(), 1) == 0):
            bad = values[np.mod(values.to_numpy(), 1) != 0]
            raise DataError(
                f"{where}: label {bad.tolist()[0]!r} in row {bad.index[0]} is not a class; expected "
                "integer class indices or class names"
            )
        return values.to_numpy(dtype=np.int64), []
    names = classes if classes is not None else sorted(values.astype(str).unique())
    index = {str(name): i for i, name in enumerate(names)}
    unknown = sorted(set(values.astype(str)) - set(index))
    if unknown:
        raise DataError(f"{where}: labels {unknown[:5]} are not among the training classes {names}")
    return values.astype(str).map(index).to_numpy(dtype=np.int64), names


def _part(
    path: Path,
    label: str,
    columns: list[str] | None,
    fmt: str | None,
    read_args: dict[str, Any],
    classes: list[Any] | None,
) -> tuple[torch.Tensor, np.ndarray, list[str], list[Any]]:
    where = f"table {str(path)!r}"
    frame = _read(path, fmt, read_args)
    if label not in frame.columns:
        raise DataError(
            f"{where} has columns {list(frame.columns)[:12]}; expected the label column {label!r}"
        )
    chosen = columns if columns is not None else [c for c in frame.columns if c != label]
    absent = [c for c in chosen if c not in frame.columns]
    if absent or not chosen:
        raise DataError(
            f"{where}: feature columns {absent or chosen} are not in the table; expected some of "
            f"{[c for c in frame.columns if c != label][:12]}"
        )
    if label in chosen:
        raise DataError(f"{where}: the label column {label!r} is also listed in features; expected it apart")
    x = torch.from_numpy(_feature_matrix(frame, [str(c) for c in chosen], where).astype(np.float32))
    y, names = _label_codes(frame[label], classes, where)
    return x, y, [str(c) for c in chosen], names


def table(
    path: str,
    label: str = "label",
    features: list[str] | None = None,
    test_path: str | None = None,
    num_classes: int | None = None,
    format: str | None = None,
    read_args: dict[str, Any] | None = None,
) -> RawData:
    """A CSV or Parquet table, one row per sample: ``features`` (column names; default every
    column but ``label``) and the ``label`` column (integer class indices, or class names indexed
    in sorted order). ``test_path``: a second table with the same columns, kept as the test set.
    ``format``: ``csv`` | ``parquet`` (default: from the suffix); ``read_args``: passed to
    ``pandas.read_csv`` / ``read_parquet`` (``sep``, ``columns``...). Missing cells and
    non-numeric features are refused naming the column and rows."""
    if features is not None and (not isinstance(features, list) or not features):
        raise DataError(f"table option features={features!r}; expected a non-empty list of column names")
    args = dict(read_args or {})
    x, y, names, classes = _part(Path(path), label, features, format, args, None)
    test = None
    if test_path is not None:
        xt, yt, _, _ = _part(Path(test_path), label, names, format, args, classes or None)
        test = (xt, yt)
    if num_classes is None:
        num_classes = (
            len(classes) or int(max([y.max(initial=-1)] + ([test[1].max(initial=-1)] if test else []))) + 1
        )
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"table {path!r}: num_classes={num_classes!r}; expected an integer >= 1")
    # pandas hands out read-only views (copy-on-write): torch needs arrays of its own
    data = TensorSource(x, torch.tensor(y), num_classes)
    held = None if test is None else TensorSource(test[0], torch.tensor(test[1]), num_classes)
    return RawData(Path(path).stem, data, held, feature_names=tuple(names))
