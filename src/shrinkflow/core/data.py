"""In-memory data sets as tensors, their checks and the train/val/test split.

Small data sets (digits, MNIST, tables) fit in memory; slicing preloaded tensors is many times
faster than a per-sample ``Dataset.__getitem__`` loop, so everything here is a pair of tensors:
images (N, C, H, W) or table rows (N, F). :func:`modality` tells them apart; the code specific to
tables lives in :mod:`shrinkflow.core.tables`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from shrinkflow.core.config import ConfigError

__all__ = [
    "DataError",
    "RawData",
    "Split",
    "calibration_batches",
    "check_split",
    "modality",
    "split_data",
    "with_channels",
]


class DataError(ValueError):
    """Input data is missing, corrupt or inconsistent."""


@dataclass
class Split:
    """Inputs ``x``: images (N, C, H, W) float32 in [0, 1] or table rows (N, F) float32; labels
    ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W) for images, (F,) for tables."""
        return tuple(int(d) for d in self.x.shape[1:])

    def subset(self, n: int) -> Split:
        """The first ``n`` samples (calibration, quick checks)."""
        return Split(self.x[:n], self.y[:n], self.num_classes)


@dataclass
class RawData:
    """What a data-set plugin returns: a pool of samples, and a fixed test set if it has one."""

    name: str
    data: Split
    test: Split | None = None
    #: column names of a table's features (messages and validation name them); None: ``x[:, i]``
    feature_names: tuple[str, ...] | None = None


#: ``x.ndim`` of each modality's inputs
_MODALITIES = {4: "image", 2: "table"}


def modality(split: Split) -> str:
    """``image`` for (N, C, H, W) inputs, ``table`` for (N, F); DataError otherwise."""
    kind = _MODALITIES.get(split.x.ndim)
    if kind is None:
        raise DataError(
            f"inputs have shape {tuple(split.x.shape)}; expected (N, C, H, W) images or (N, F) table rows"
        )
    return kind


def check_split(split: Split, name: str) -> Split:
    """Raise DataError naming the problem if ``split`` is not a usable classification set of
    images (N, C, H, W) or table rows (N, F)."""
    x, y = split.x, split.y
    if x.ndim not in _MODALITIES:
        raise DataError(
            f"{name}: inputs have shape {tuple(x.shape)}; expected (N, C, H, W) images or (N, F) table rows"
        )
    what = "images" if x.ndim == 4 else "rows"
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"{name}: labels have shape {tuple(y.shape)} for {x.shape[0]} {what}; expected ({x.shape[0]},)"
        )
    if x.shape[0] == 0:
        raise DataError(f"{name}: no samples; expected at least one")
    what = "images" if x.ndim == 4 else "features"
    if not torch.is_floating_point(x):
        raise DataError(f"{name}: {what} have dtype {x.dtype}; expected a floating dtype")
    n_nan = int(torch.isnan(x).sum())
    if n_nan or not torch.isfinite(x).all():
        raise DataError(f"{name}: {what} contain {n_nan} NaN and non-finite values; expected none")
    if y.dtype != torch.int64:
        raise DataError(f"{name}: labels have dtype {y.dtype}; expected torch.int64")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= split.num_classes:
        raise DataError(f"{name}: labels range over [{lo}, {hi}]; expected 0 <= label < {split.num_classes}")
    return split


def _stratified(y: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    # Stratify when every class can appear on both sides; otherwise a plain shuffled split.
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    keep, take = train_test_split(idx, test_size=size, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(take)


def split_data(
    raw: RawData, val_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    """Stratified train/val/test split. A data set with a fixed test set keeps it and only carves
    the validation set out of its pool (``test_fraction`` is then unused)."""
    pool = check_split(raw.data, f"{raw.name} data")
    y = pool.y.numpy()
    if raw.test is not None:
        test = check_split(raw.test, f"{raw.name} test")
        if test.input_shape != pool.input_shape:
            raise DataError(
                f"{raw.name}: test samples are {test.input_shape}, training samples {pool.input_shape}; "
                "expected the same shape"
            )
        train_idx, val_idx = _stratified(y, val_fraction, seed)
    else:
        rest_idx, test_idx = _stratified(y, test_fraction, seed)
        fraction = val_fraction / (1.0 - test_fraction)
        train_rel, val_rel = _stratified(y[rest_idx], fraction, seed)
        train_idx, val_idx = rest_idx[train_rel], rest_idx[val_rel]
        test = Split(pool.x[test_idx], pool.y[test_idx], pool.num_classes)
    train = Split(pool.x[train_idx], pool.y[train_idx], pool.num_classes)
    val = Split(pool.x[val_idx], pool.y[val_idx], pool.num_classes)
    return train, val, test


def with_channels(split: Split, channels: int | None) -> Split:
    """Images with ``channels`` channels: a 1-channel image repeated (grayscale into a model whose
    stem takes RGB, e.g. torchvision's ResNets), several averaged into 1; None leaves them as
    they are. Raises DataError for other conversions, ConfigError for table rows (no channels)."""
    if channels is None:
        return split
    if modality(split) == "table":
        raise ConfigError(
            "data.channels",
            channels,
            f"null for table rows of shape (N, {split.input_shape[0]}): channels apply to images only",
        )
    c = int(split.x.shape[1])
    if channels == c:
        return split
    if c == 1:
        x = split.x.expand(-1, channels, *split.x.shape[2:]).contiguous()
    elif channels == 1:
        x = split.x.mean(dim=1, keepdim=True)
    else:
        raise DataError(f"images have {c} channels; data.channels={channels} expects 1 or {channels}")
    return Split(x, split.y, split.num_classes)


def calibration_batches(data: Split, batches: int, batch_size: int) -> Iterator[torch.Tensor]:
    """A fixed random subset of ``data`` (seed 0: the same samples in every run), in batches:
    what static quantizers observe to fix activation ranges."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for i in range(min(batches, -(-len(data) // batch_size))):
        yield data.x[order[i * batch_size : (i + 1) * batch_size]]
