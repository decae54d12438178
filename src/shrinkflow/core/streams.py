"""Data that can only be read in order: an iterable data set, and shards of tar files.

A :class:`StreamSource` wraps any iterable of ``(input, label)`` pairs (a torch
``IterableDataset``, records read from tar shards, a database cursor) that yields the same
records in the same order on every pass. Sample ``i`` is the ``i``-th record, so a split is still a
set of positions, stratified on the labels, stored and reproducible like any other. Reading never
seeks: a split's batches come from one pass over the stream, keeping its positions, shuffled
through a seeded buffer of ``shuffle_buffer`` samples (the WebDataset / tf.data approach: the
order is random within a window, not over the whole set); inputs are decoded one at a time.

:func:`tar_shards` reads the WebDataset layout: tar files whose members ``<key>.<image ext>`` and
``<key>.cls`` (the class index as text) make one sample per key. It is read with :mod:`tarfile`
(no extra dependency); the label pass reads only the small ``.cls`` members.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrinkflow.core.data import DataError, RawData, Source, content_key

__all__ = ["StreamSource", "tar_shards"]


def _identity(x: Any) -> Any:
    return x


class StreamSource(Source):
    """``records()`` yields ``(payload, label)`` in a fixed order, and ``decode(payload)`` makes the
    input tensor (only records a pass keeps are decoded; default: the payload is the tensor).
    ``labels`` is read by one pass unless ``label_pass()`` gives a cheaper one (labels only)."""

    sequential = True

    def __init__(
        self,
        records: Callable[[], Iterable[tuple[Any, int]]],
        num_classes: int | None = None,
        *,
        decode: Callable[[Any], torch.Tensor] = _identity,
        label_pass: Callable[[], Iterable[int]] | None = None,
        name: str = "stream",
    ) -> None:
        self.records, self.decode, self.name = records, decode, name
        labels = [int(y) for y in label_pass()] if label_pass is not None else [int(y) for _, y in records()]
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.num_classes = int(num_classes if num_classes is not None else (max(labels, default=-1) + 1))

    def scan(self, indices: Sequence[int] | torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """``(position, input)`` for the wanted positions, in stream order, in one pass that stops
        after the last of them."""
        wanted = {int(i) for i in indices}
        if not wanted:
            return
        last = max(wanted)
        for position, (payload, _) in enumerate(self.records()):
            if position in wanted:
                yield position, self.decode(payload)
            if position >= last:
                return

    def item(self, index: int) -> torch.Tensor:
        for _, x in self.scan([index]):
            return x
        raise DataError(f"{self.name}: no record {index}; the stream holds {len(self)}")

    def items(self, indices: torch.Tensor) -> list[torch.Tensor]:
        found = dict(self.scan(indices))
        return [found[int(i)] for i in indices]

    def chunks(self, size: int) -> Iterator[list[torch.Tensor]]:
        chunk: list[torch.Tensor] = []
        for payload, _ in self.records():
            chunk.append(self.decode(payload))
            if len(chunk) == size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        found = {p: content_key(x) for p, x in self.scan(indices)}
        return [found[int(i)] for i in indices]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.name.encode() + self.labels.numpy().tobytes()).hexdigest()

    def describe(self, index: int) -> str:
        return f"{self.name} record {index}"


def shuffled(records: Iterable[Any], buffer: int, generator: torch.Generator) -> Iterator[Any]:
    """``records`` in a random order within a window of ``buffer``: each new record replaces a
    randomly drawn one from the buffer, which is emitted; the rest are emitted shuffled at the end."""
    pool: list[Any] = []
    for record in records:
        if len(pool) < buffer:
            pool.append(record)
            continue
        j = int(torch.randint(0, buffer, (1,), generator=generator))
        pool[j], record = record, pool[j]
        yield record
    for j in torch.randperm(len(pool), generator=generator).tolist():
        yield pool[j]


def _shards(path: str) -> list[Path]:
    root = Path(path)
    files = sorted(root.glob("*.tar")) if root.is_dir() else sorted(root.parent.glob(root.name))
    if not files:
        raise DataError(f"tar shards {path!r}: no .tar files found; expected a folder of shards or a glob")
    return files


def _members(files: list[Path], wanted: Callable[[str], bool]) -> Iterator[tuple[str, str, bytes]]:
    """``(key, extension, bytes)`` of the wanted members, shard by shard, in archive order."""
    for file in files:
        try:
            with tarfile.open(file, mode="r|*") as archive:  # a stream: no seeking, no index
                for member in archive:
                    if not member.isfile():
                        continue
                    key, _, ext = member.name.rpartition(".")
                    if wanted(ext.lower()):
                        data = archive.extractfile(member)
                        yield key, ext.lower(), data.read() if data is not None else b""
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"tar shard {str(file)!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def _label(raw: bytes, where: str) -> int:
    try:
        return int(raw.decode().strip())
    except ValueError:
        raise DataError(
            f"{where}: label {raw[:20]!r} is not a class index; expected an integer as text"
        ) from None


_IMAGE_EXTS = {"png", "jpg", "jpeg", "bmp", "webp", "gif", "tif", "tiff"}


class _Decode:
    """A sample's image bytes -> uint8 (C, H, W), only for the samples a pass keeps."""

    def __init__(self, channels: int) -> None:
        self.mode = {1: "L", 3: "RGB"}[channels]

    def __call__(self, payload: tuple[str, bytes]) -> torch.Tensor:
        from PIL import Image

        key, data = payload
        try:
            with Image.open(io.BytesIO(data)) as im:
                array = np.array(im.convert(self.mode), dtype=np.uint8)
        except OSError as exc:
            raise DataError(f"tar shards: sample {key!r} has an unreadable image: {exc}") from exc
        return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())


def _samples(files: list[Path]) -> Iterator[tuple[tuple[str, bytes], int]]:
    pending: dict[str, dict[str, bytes]] = {}
    for key, ext, data in _members(files, lambda e: e == "cls" or e in _IMAGE_EXTS):
        parts = pending.setdefault(key, {})
        parts["cls" if ext == "cls" else "image"] = data
        if len(parts) == 2:
            del pending[key]
            yield (key, parts["image"]), _label(parts["cls"], f"tar shards: sample {key!r}")
    if pending:
        key, parts = next(iter(pending.items()))
        raise DataError(
            f"tar shards: sample {key!r} has only {sorted(parts)}; expected an image and a .cls label"
        )


def tar_shards(
    path: str, test_path: str | None = None, channels: int = 3, num_classes: int | None = None
) -> RawData:
    """Samples in WebDataset-style tar shards (``<key>.png`` + ``<key>.cls`` per sample) under the
    folder (or glob) ``path``, read in order; ``test_path``: shards of a fixed test set."""
    if channels not in (1, 3):
        raise DataError(f"tar_shards channels={channels!r}; expected 1 (grayscale) or 3 (RGB)")

    def source(where: str, classes: int | None) -> StreamSource:
        files = _shards(where)
        return StreamSource(
            lambda: _samples(files),
            classes,
            decode=_Decode(channels),
            label_pass=lambda: (
                _label(d, f"tar shards: sample {k!r}") for k, _, d in _members(files, "cls".__eq__)
            ),
            name=f"tar shards {where!r}",
        )

    data = source(path, num_classes)
    test = None if test_path is None else source(test_path, data.num_classes)
    return RawData(Path(path).name, data, test)
