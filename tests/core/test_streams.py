"""Data read only in order: WebDataset-style tar shards as a stream, split by position, shuffled
through a buffer, and the same batches as an indexable source of the same samples."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrinkflow.core.data import DataError, Split, TensorSource, split_data
from shrinkflow.core.loader import LoaderConfig
from shrinkflow.core.streams import StreamSource, shuffled, tar_shards


def write_shards(root: Path, n: int, per_shard: int = 25, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` RGB images with labels i % 4, in shards of ``per_shard`` samples; returns (images, labels)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    labels = np.arange(n) % 4
    root.mkdir(parents=True)
    for shard in range(0, n, per_shard):
        with tarfile.open(root / f"shard-{shard // per_shard:04d}.tar", "w") as archive:
            for i in range(shard, min(shard + per_shard, n)):
                png = io.BytesIO()
                Image.fromarray(images[i], "RGB").save(png, format="PNG")
                for ext, data in (("png", png.getvalue()), ("cls", str(labels[i]).encode())):
                    info = tarfile.TarInfo(f"sample{i:05d}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return images, labels


def test_tar_shards_are_read_in_order_with_their_labels(tmp_path):
    images, labels = write_shards(tmp_path / "shards", 60)
    raw = tar_shards(str(tmp_path / "shards"))
    source = raw.data
    assert source.sequential and len(source) == 60 and source.num_classes == 4
    assert source.labels.tolist() == labels.tolist()
    assert torch.equal(source.item(37), torch.from_numpy(images[37]).permute(2, 0, 1))
    assert [x[0, 0, 0].item() for x in source.items(torch.tensor([5, 2]))] == [
        images[5, 0, 0, 0],
        images[2, 0, 0, 0],
    ]


def test_a_stream_split_gives_the_batches_of_the_same_samples_in_memory(tmp_path):
    images, labels = write_shards(tmp_path / "shards", 60)
    stream = tar_shards(str(tmp_path / "shards"))
    memory = TensorSource(
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels), 4
    )
    steps = ({"normalize": {"mean": [0.5] * 3, "std": [0.5] * 3}},)
    for a, b in zip(
        split_data(stream, 0.2, 0.2, seed=3, transforms=steps),
        split_data(type(stream)("m", memory), 0.2, 0.2, seed=3, transforms=steps),
        strict=True,
    ):
        assert torch.equal(a.indices, b.indices)  # the same stratified positions
        assert torch.equal(a.for_eval().x, b.for_eval().x) and torch.equal(a.y, b.y)


def test_shuffled_batches_cover_the_split_once_in_a_new_order_each_epoch(tmp_path):
    write_shards(tmp_path / "shards", 60)
    source = tar_shards(str(tmp_path / "shards")).data
    split = Split(source, torch.arange(0, 60, 2), loader=LoaderConfig(shuffle_buffer=8, num_workers=2))
    batches = split.batches(7, shuffle=True, generator=torch.Generator().manual_seed(0))
    epochs = [[(xb, yb) for xb, yb in batches] for _ in range(2)]
    for epoch in epochs:
        assert [len(yb) for _, yb in epoch] == [7, 7, 7, 7, 2]
        seen = torch.cat([xb for xb, _ in epoch])
        assert sorted(seen[:, 0, 0, 0].tolist()) == sorted(split.x[:, 0, 0, 0].tolist())
    orders = [torch.cat([xb for xb, _ in e])[:, 0, 0, 0].tolist() for e in epochs]
    assert orders[0] != orders[1] and orders[0] != split.x[:, 0, 0, 0].tolist()


def test_the_shuffle_buffer_keeps_every_record_once():
    out = list(shuffled(range(100), 10, torch.Generator().manual_seed(1)))
    assert sorted(out) == list(range(100)) and out != list(range(100))


def test_broken_shards_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.tar files found"):
        tar_shards(str(tmp_path / "empty"))
    write_shards(tmp_path / "shards", 10, per_shard=10)
    (tmp_path / "shards" / "shard-0000.tar").write_bytes(b"\0" * 100 + b"garbage")
    with pytest.raises(DataError, match=r"shard-0000.tar' cannot be read"):
        tar_shards(str(tmp_path / "shards"))


def test_a_stream_that_changes_its_length_is_caught_by_the_fingerprint():
    records = [(torch.zeros(1, 2, 2), i % 2) for i in range(6)]
    a = StreamSource(lambda: iter(records), 2)
    b = StreamSource(lambda: iter(records[:5]), 2)
    assert a.fingerprint() != b.fingerprint() and len(a) == 6
