"""Mini-batches of a :class:`~shrinkflow.core.data.Split`: read in this process, or by
``torch.utils.data.DataLoader`` workers.

Either way the sample order is drawn here (``torch.randperm`` on the caller's generator), so a run
sees the same batches with or without workers, and an in-memory split without transforms reads a
batch as one tensor slice, not one ``__getitem__`` per sample. With ``num_workers > 0`` the
DataLoader gets the batches as its ``batch_sampler`` and each worker assembles whole batches
(:meth:`_View.__getitems__`); ``persistent_workers`` keeps them across epochs, ``pin_memory``
page-locks batches bound for a GPU so the copy overlaps compute (``non_blocking``).

Random augmentation draws from torch's RNG: in this process the seeded global one; in workers
each worker's, seeded by the DataLoader from a generator seeded here. A run is reproducible for a
given ``num_workers``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from shrinkflow.core.config import Config, ConfigError, check_range

__all__ = ["Batches", "LoaderConfig"]


@dataclass
class LoaderConfig(Config):
    """How batches are read. ``num_workers``: 0 reads in the training process (fastest for data in
    memory); N > 0 decodes and augments in N worker processes. ``pin_memory``: ``auto`` pins when
    training on CUDA. ``prefetch_factor``: batches each worker keeps ready (null: torch's 2).
    ``shuffle_buffer``: samples a source read only in order is shuffled within (it is read in the
    training process, whatever ``num_workers``)."""

    num_workers: int = 0
    pin_memory: bool | str = "auto"
    persistent_workers: bool = True
    prefetch_factor: int | None = None
    shuffle_buffer: int = 10_000

    def __post_init__(self) -> None:
        check_range("num_workers", self.num_workers, 0, 512, integer=True)
        check_range("shuffle_buffer", self.shuffle_buffer, 1, 100_000_000, integer=True)
        if self.pin_memory not in (True, False, "auto"):
            raise ConfigError("pin_memory", self.pin_memory, "true, false or auto")
        if not isinstance(self.persistent_workers, bool):
            raise ConfigError("persistent_workers", self.persistent_workers, "true or false")
        if self.prefetch_factor is not None:
            check_range("prefetch_factor", self.prefetch_factor, 1, 1024, integer=True)


class _View(Dataset):
    """A split as the DataLoader sees it: ``__getitems__`` assembles one whole batch."""

    def __init__(self, split: Any) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.take(positions)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.split.take([position])
        return x[0], y[0]


def _as_batch(batch: Any) -> Any:
    return batch


class _Order:
    """The batch sampler: the current epoch's batches of positions."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Batches:
    """``(inputs, labels)`` mini-batches of ``split``; iterate once per epoch (a shuffled one draws a
    new order from ``generator``). Batches land on ``device`` (None: where they are read)."""

    def __init__(
        self,
        split: Any,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.device = device
        self.cfg: LoaderConfig = split.loader if split.loader is not None else LoaderConfig()
        on_gpu = device is not None and device.type == "cuda"
        self.pin = on_gpu if self.cfg.pin_memory == "auto" else bool(self.cfg.pin_memory) and on_gpu
        self._order = _Order()
        self._loader: DataLoader | None = None

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def _positions(self) -> list[torch.Tensor]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        lengths = getattr(self.split.source, "lengths", None)
        if self.shuffle and callable(lengths):
            return self._bucketed(order, lengths(self.split.indices))
        return [order[s : s + self.batch_size] for s in range(0, n, self.batch_size)]

    #: batches per bucket of similar lengths (:meth:`_bucketed`)
    BUCKET = 50

    def _bucketed(self, order: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Sequences padded per batch (text): the shuffled order cut into buckets of ``BUCKET``
        batches, each sorted by length before it is cut into batches, then the batches shuffled.
        Every batch holds texts of similar length, so little of it is padding (SST-2, batch 128:
        padded tokens 75% -> 6%), and batches stay random in content and order."""
        size = self.batch_size * self.BUCKET
        batches = []
        for start in range(0, len(order), size):
            bucket = order[start : start + size]
            bucket = bucket[torch.argsort(lengths[bucket], stable=True)]
            batches += [bucket[s : s + self.batch_size] for s in range(0, len(bucket), self.batch_size)]
        shuffle = torch.randperm(len(batches), generator=self.generator)
        return [batches[int(i)] for i in shuffle]

    def _workers(self) -> DataLoader:
        if self._loader is None:
            extra = {} if self.cfg.prefetch_factor is None else {"prefetch_factor": self.cfg.prefetch_factor}
            # worker RNGs from the generator's seed, not its stream: the order stays what it is without workers
            seed = (self.generator.initial_seed() + 1) % 2**63
            self._loader = DataLoader(
                _View(self.split),
                batch_sampler=self._order,
                num_workers=self.cfg.num_workers,
                collate_fn=_as_batch,
                pin_memory=self.pin,
                persistent_workers=self.cfg.persistent_workers,
                generator=torch.Generator().manual_seed(seed),
                **extra,
            )
        return self._loader

    def _sequential(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A source read only in order: one pass keeping the split's positions, shuffled (when
        asked) through a buffer of ``shuffle_buffer`` samples drawn with the generator."""
        from shrinkflow.core.streams import shuffled

        split, pipeline = self.split, self.split._pipeline()
        records: Any = split.source.scan(split.indices)
        if self.shuffle:
            records = shuffled(records, self.cfg.shuffle_buffer, self.generator)
        chunk: list[tuple[int, torch.Tensor]] = []
        for record in records:
            chunk.append(record)
            if len(chunk) == self.batch_size:
                yield self._assemble(chunk, pipeline)
                chunk = []
        if chunk:
            yield self._assemble(chunk, pipeline)

    def _assemble(
        self, chunk: list[tuple[int, torch.Tensor]], pipeline: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.tensor([p for p, _ in chunk])
        source = self.split.source
        return pipeline.assemble([x for _, x in chunk], source, idx), source.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        workers = self.cfg.num_workers > 0 and not self.split.source.sequential
        if self.split.source.sequential:
            batches: Any = self._sequential()
        elif not workers:
            batches = (self.split.take(p) for p in self._positions())
        else:
            positions = self._positions()
            self._order.batches = [p.tolist() for p in positions]
            batches = iter(self._workers())
        for x, y in batches:
            if self.device is not None and self.device.type != "cpu":
                if self.pin and not workers:  # the DataLoader pins its own batches
                    x, y = x.pin_memory(), y.pin_memory()
                x, y = x.to(self.device, non_blocking=self.pin), y.to(self.device, non_blocking=self.pin)
            yield x, y
