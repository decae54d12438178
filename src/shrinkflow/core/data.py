"""Data sets as torch ``Dataset``s, their checks and the train/val/test split.

A data-set plugin returns :class:`RawData`: a :class:`Source` (a map-style ``Dataset`` whose labels
are known up front) for the pool, and one for a fixed test set if it has one. A :class:`Split`
is a source, the positions of its samples in that source and how they are transformed
(:mod:`shrinkflow.core.transforms`); nothing is copied. Batches are assembled on demand
(:mod:`shrinkflow.core.loader`: in this process, or in DataLoader workers), so a folder of a
million images costs its file list, not its pixels.

Small sources held in memory (digits, MNIST, tables: :class:`TensorSource`) give whole batches by
slicing one tensor, many times faster than a per-sample ``__getitem__`` loop; sources of files
decode one item at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from shrinkflow.core.config import ConfigError

__all__ = [
    "DataError",
    "RawData",
    "Source",
    "Split",
    "TensorSource",
    "calibration_batches",
    "check_source",
    "modality",
    "split_data",
]


class DataError(ValueError):
    """Input data is missing, corrupt or inconsistent."""


class Source(Dataset):
    """A labelled, indexable data set: ``source[i]`` is ``(input, label)``.

    Subclasses set ``labels`` ((N,) int64, known without reading the inputs) and ``num_classes``,
    and implement :meth:`item`. Inputs are images (C, H, W), uint8 0..255 or float in [0, 1], or
    table rows (F,) float32. :meth:`batch` may be overridden by sources that can read many
    samples at once (a tensor slice).
    """

    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def item(self, index: int) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.item(int(index)), int(self.labels[index])

    #: True for a source read only in order (:class:`shrinkflow.core.streams.StreamSource`)
    sequential = False

    def batch(self, indices: torch.Tensor) -> torch.Tensor | None:
        """Inputs of many samples at once, or None when the source reads one item at a time."""
        return None

    def items(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """The inputs of ``indices``, one tensor each (sizes may differ)."""
        return [self.item(int(i)) for i in indices]

    def chunks(self, size: int) -> Iterator[torch.Tensor | list[torch.Tensor]]:
        """Every input in order, ``size`` at a time: a batch tensor, or a list of items."""
        for start in range(0, len(self), size):
            idx = torch.arange(start, min(start + size, len(self)))
            x = self.batch(idx)
            yield x if x is not None else self.items(idx)

    def fingerprint(self) -> str:
        """A digest identifying the source's layout (which sample is where, with which label): a
        stored split refuses a source whose fingerprint differs from the one it was cut from."""
        return hashlib.sha256(self.labels.numpy().tobytes()).hexdigest()

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        """One digest per sample of its stored content (duplicates across splits show as equal keys)."""
        return [content_key(self.item(int(i))) for i in indices]

    def describe(self, index: int) -> str:
        """How a message names sample ``index`` (a file path, or the position)."""
        return f"sample {index}"


def content_key(x: torch.Tensor) -> bytes:
    """A 16-byte digest of a sample's stored values."""
    return hashlib.blake2b(x.numpy().tobytes(), digest_size=16).digest()


class TensorSource(Source):
    """Samples held in memory: ``x`` (N, C, H, W) images or (N, F) rows, ``y`` (N,) int64."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        self.x, self.y, self.labels, self.num_classes = x, y, y, int(num_classes)

    def item(self, index: int) -> torch.Tensor:
        return self.x[index]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.x[indices]

    def fingerprint(self) -> str:
        return array_fingerprint(tuple(self.x.shape), str(self.x.dtype), self.y)

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        rows = self.x[indices].reshape(len(indices), -1).contiguous().numpy()
        return [row.tobytes() for row in rows]


def array_fingerprint(shape: tuple[int, ...], dtype: str, labels: torch.Tensor) -> str:
    """The fingerprint of samples held as one array: its shape and dtype, and the labels."""
    digest = hashlib.sha256(str((shape, dtype)).encode())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


@dataclass
class RawData:
    """What a data-set plugin returns: a pool of samples, and a fixed test set if it has one.

    ``origin`` (set by the catalog's plugin dataset): ``{"plugin", "options"}``, how the sources
    are rebuilt when a stored split is loaded in another process."""

    name: str
    data: Source
    test: Source | None = None
    #: a fixed validation set (SST-2's dev file); None: the validation split is carved from ``data``
    val: Source | None = None
    #: column names of a table's features (messages and validation name them); None: ``x[:, i]``
    feature_names: tuple[str, ...] | None = None
    origin: dict[str, Any] | None = None


#: dimensions of one sample of each modality
_MODALITIES = {3: "image", 1: "table"}


def modality(data: Source | Split) -> str:
    """``image`` for (C, H, W) samples, ``table`` for (F,) float rows, ``text`` for token ids (a
    source that says so: :class:`shrinkflow.core.text.TextSource`); DataError otherwise."""
    source = data.source if isinstance(data, Split) else data
    declared = getattr(source, "modality", None)
    if isinstance(declared, str):
        return declared
    if isinstance(data, TensorSource):
        shape = tuple(data.x.shape[1:])  # known without a sample: an empty set has a modality too
    elif isinstance(data, Source):
        if len(data) == 0:
            raise DataError("no samples; expected at least one to tell images from table rows")
        shape = tuple(data.item(0).shape)
    else:
        shape = data.input_shape
    kind = _MODALITIES.get(len(shape))
    if kind is None:
        raise DataError(f"samples have shape {shape}; expected (C, H, W) images or (F,) table rows")
    return kind


def check_source(source: Source, name: str) -> Source:
    """Raise DataError naming the problem if ``source`` is not a usable classification set. The
    labels are checked whole; the inputs of an in-memory source too (per-item file contents are the
    ``raw_data`` suite's, streamed)."""
    y = source.labels
    if y.ndim != 1 or y.dtype != torch.int64:
        raise DataError(
            f"{name}: labels have shape {tuple(y.shape)} and dtype {y.dtype}; expected (N,) int64"
        )
    if len(source) == 0:
        raise DataError(f"{name}: no samples; expected at least one")
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= source.num_classes:
        raise DataError(f"{name}: labels range over [{lo}, {hi}]; expected 0 <= label < {source.num_classes}")
    if isinstance(source, TensorSource):
        _check_tensors(source.x, y, name)
    return source


def _check_tensors(x: torch.Tensor, y: torch.Tensor, name: str) -> None:
    if x.ndim - 1 not in _MODALITIES:
        raise DataError(
            f"{name}: inputs have shape {tuple(x.shape)}; expected (N, C, H, W) images or (N, F) table rows"
        )
    if x.shape[0] != y.shape[0]:
        what = "images" if x.ndim == 4 else "rows"
        raise DataError(
            f"{name}: labels have shape {tuple(y.shape)} for {x.shape[0]} {what}; expected ({x.shape[0]},)"
        )
    what = "images" if x.ndim == 4 else "features"
    if x.dtype != torch.uint8:
        if not torch.is_floating_point(x):
            raise DataError(f"{name}: {what} have dtype {x.dtype}; expected a floating dtype or uint8")
        n_nan = int(torch.isnan(x).sum())
        if n_nan or not torch.isfinite(x).all():
            raise DataError(f"{name}: {what} contain {n_nan} NaN and non-finite values; expected none")


@dataclass(eq=False)
class Split:
    """Samples ``indices`` of ``source``, transformed by ``transforms`` (configuration steps,
    :mod:`shrinkflow.core.transforms`; random augmentation only when ``train``) and converted to
    ``channels`` channels. ``origin``: how to rebuild the source in another process
    (``{"plugin", "options", "part"}``; None for a source made in memory). ``loader``: how batches
    are read (:class:`shrinkflow.core.loader.LoaderConfig`; None: in this process)."""

    source: Source
    indices: torch.Tensor
    transforms: tuple[Any, ...] = ()
    train: bool = False
    channels: int | None = None
    origin: dict[str, Any] | None = None
    loader: Any = None
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> Split:
        """All of an in-memory pair of tensors (notebooks, tests)."""
        return cls(TensorSource(x, y, num_classes), torch.arange(len(y)))

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def y(self) -> torch.Tensor:
        """Labels (N,) int64, in split order."""
        return self.source.labels[self.indices]

    @property
    def x(self) -> torch.Tensor:
        """Every input at once, transformed. For small data (tests, notebooks, table statistics);
        the pipeline reads through :meth:`batches`."""
        return self.take(torch.arange(len(self)))[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape as models see it: (C, H, W) for images, (F,) for tables."""
        declared = getattr(self.source, "input_shape", None)
        if declared is not None:  # text: padded per batch, models built for the longest sequence
            return tuple(declared)
        if "shape" not in self._cache:
            self._cache["shape"] = tuple(int(d) for d in self.take(torch.arange(1))[0].shape[1:])
        return self._cache["shape"]

    def _pipeline(self) -> Any:
        if "pipeline" not in self._cache:
            from shrinkflow.core.transforms import Pipeline

            self._cache["pipeline"] = Pipeline(self.transforms, train=self.train, channels=self.channels)
        return self._cache["pipeline"]

    def take(self, positions: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of the samples at ``positions`` of this split, read in this process."""
        idx = self.indices[torch.as_tensor(positions, dtype=torch.int64)]
        return self._pipeline().batch(self.source, idx), self.source.labels[idx]

    def head(self, n: int) -> torch.Tensor:
        """The inputs of the first ``n`` samples (probe batches, latency samples)."""
        return self.take(torch.arange(min(n, len(self))))[0]

    def subset(self, n: int) -> Split:
        """The first ``n`` samples (calibration, quick checks)."""
        return self.with_indices(self.indices[:n])

    def with_indices(self, indices: torch.Tensor) -> Split:
        return replace(self, indices=indices, _cache={})

    def for_eval(self) -> Split:
        """The same samples without random augmentation."""
        return self if not self.train else replace(self, train=False, _cache={})

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> Any:
        """An iterable of ``(inputs, labels)`` mini-batches, re-iterable once per epoch (a shuffled
        one draws a new order from ``generator`` each time): :class:`shrinkflow.core.loader.Batches`."""
        from shrinkflow.core.loader import Batches

        return Batches(self, batch_size, shuffle=shuffle, generator=generator, device=device)


def _stratified(y: np.ndarray, size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(y))
    # Stratify when every class can appear on both sides; otherwise a plain shuffled split.
    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    keep, take = train_test_split(idx, test_size=size, random_state=seed, stratify=stratify)
    return np.sort(keep), np.sort(take)


def split_data(
    raw: RawData,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    transforms: Sequence[Any] = (),
    channels: int | None = None,
) -> tuple[Split, Split, Split]:
    """Stratified train/val/test split. A data set with a fixed test set keeps it and only carves
    the validation set out of its pool (``test_fraction`` is then unused); one with fixed validation
    and test sets trains on its whole pool (both fractions unused). Augmenting steps of
    ``transforms`` apply to the training split only."""
    pool = check_source(raw.data, f"{raw.name} data")
    y = pool.labels.numpy()
    origin = None if raw.origin is None else dict(raw.origin)
    common = {"transforms": tuple(transforms), "channels": channels}
    if raw.val is not None and raw.test is None:
        raise DataError(f"{raw.name}: a fixed validation set and no fixed test set; expected both or neither")
    fixed = {
        name: _fixed(raw.name, pool, name, source, origin, common)
        for name, source in (("val", raw.val), ("test", raw.test))
        if source is not None
    }
    if "val" in fixed:  # fixed validation and test sets: the whole pool trains
        train_idx, val, test = np.arange(len(pool)), fixed["val"], fixed["test"]
    elif "test" in fixed:
        train_idx, val_idx = _stratified(y, val_fraction, seed)
        val, test = _part(pool, val_idx, origin, common), fixed["test"]
    else:
        rest_idx, test_idx = _stratified(y, test_fraction, seed)
        fraction = val_fraction / (1.0 - test_fraction)
        train_rel, val_rel = _stratified(y[rest_idx], fraction, seed)
        train_idx = rest_idx[train_rel]
        val, test = _part(pool, rest_idx[val_rel], origin, common), _part(pool, test_idx, origin, common)
    train = replace(_part(pool, train_idx, origin, common), train=True)
    if test.input_shape != val.input_shape:
        raise DataError(
            f"{raw.name}: test samples are {test.input_shape}, training samples {val.input_shape}; "
            "expected the same shape (a resize transform makes them so)"
        )
    return train, val, test


def _fixed(
    name: str, pool: Source, part: str, source: Source, origin: dict[str, Any] | None, common: dict[str, Any]
) -> Split:
    """A data set's fixed ``part`` (val or test) whole, checked against its pool."""
    source = check_source(source, f"{name} {part}")
    if source.num_classes != pool.num_classes:
        raise DataError(
            f"{name}: the {part} set has {source.num_classes} classes, the data {pool.num_classes}; expected the same"
        )
    where = None if origin is None else {**origin, "part": part}
    return Split(source, torch.arange(len(source)), origin=where, **common)


def _part(pool: Source, idx: np.ndarray, origin: dict[str, Any] | None, common: dict[str, Any]) -> Split:
    where = None if origin is None else {**origin, "part": "data"}
    return Split(pool, torch.from_numpy(np.asarray(idx, dtype=np.int64)), origin=where, **common)


def check_channels(channels: int | None, input_shape: tuple[int, ...]) -> None:
    """ConfigError for ``data.channels`` set on table rows (channels apply to images only)."""
    if channels is not None and len(input_shape) == 1:
        raise ConfigError(
            "data.channels",
            channels,
            f"null for table rows of shape (N, {input_shape[0]}): channels apply to images only",
        )


def calibration_batches(data: Split, batches: int, batch_size: int) -> Iterator[torch.Tensor]:
    """A fixed random subset of ``data`` (seed 0: the same samples in every run), in batches,
    without augmentation: what static quantizers observe to fix activation ranges."""
    data = data.for_eval()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    for i in range(min(batches, -(-len(data) // batch_size))):
        yield data.take(order[i * batch_size : (i + 1) * batch_size])[0]
