"""MNIST IDX reading (gzipped or plain) and its error paths."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from shrinkflow.core.data import DataError
from shrinkflow.core.datasets import digits, mnist


def _idx(images: np.ndarray) -> bytes:
    return (
        struct.pack(">BBBB", 0, 0, 8, images.ndim)
        + struct.pack(f">{images.ndim}I", *images.shape)
        + images.tobytes()
    )


def _write(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        parts = {
            "images-idx3-ubyte": rng.integers(0, 256, (n, 5, 5), dtype=np.uint8),
            "labels-idx1-ubyte": (np.arange(n) % 10).astype(np.uint8),
        }
        for stem, array in parts.items():
            data = _idx(array)
            name = f"{prefix}-{stem}" + (".gz" if gz else "")
            (folder / name).write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_gzipped_and_plain_idx(tmp_path, gz):
    _write(tmp_path, gz=gz)
    raw = mnist(str(tmp_path))
    assert raw.data.x.shape == (6, 1, 5, 5) and raw.test is not None and raw.test.x.shape == (4, 1, 5, 5)
    assert float(raw.data.x.min()) >= 0.0 and float(raw.data.x.max()) <= 1.0
    assert raw.data.y.tolist() == [0, 1, 2, 3, 4, 5]


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        mnist(str(tmp_path / "missing"))
    _write(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx(np.zeros(3, dtype=np.uint8))))
    with pytest.raises(DataError, match=r"do not match"):
        mnist(str(tmp_path))
    labels.write_bytes(gzip.compress(_idx(np.zeros(4, dtype=np.uint8))[:-2]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz.*truncated or corrupt"):
        mnist(str(tmp_path))
    labels.write_bytes(b"\x1f\x8bgarbage")
    with pytest.raises(DataError, match="not a readable gzip file"):
        mnist(str(tmp_path))
    labels.write_bytes(gzip.compress(b"\x08\x03\x00\x01" + bytes(8)))
    with pytest.raises(DataError, match="no IDX magic number"):
        mnist(str(tmp_path))
    labels.unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\[.gz\] not found"):
        mnist(str(tmp_path))


def test_digits_is_embedded_and_scaled():
    raw = digits()
    assert raw.data.x.shape == (1797, 1, 8, 8) and float(raw.data.x.max()) == 1.0
    assert sorted(set(raw.data.y.tolist())) == list(range(10))
