"""Built-in data-set plugins: scikit-learn's digits (embedded) and MNIST from IDX files."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from shrinkflow.core.data import DataError, RawData, Split

__all__ = ["digits", "mnist", "read_idx"]


def digits() -> RawData:
    """The 1,797 8x8 handwritten digits shipped inside scikit-learn (no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return RawData("digits", Split(x, y, 10))


_IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain). Only unsigned-byte data, the MNIST format, is accepted."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file {str(path)!r} does not exist") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"IDX file {str(path)!r} is not a readable gzip file: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"IDX file {str(path)!r} has no IDX magic number; expected 0x0000 followed by type and rank"
        )
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_DTYPES:
        raise DataError(f"IDX file {str(path)!r} has data type 0x{dtype:02x}; expected 0x08 (unsigned byte)")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"IDX file {str(path)!r} holds {len(raw)} bytes; its header {shape} needs {expected} (truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=_IDX_DTYPES[dtype], offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"MNIST file {stem}[.gz] not found in {str(folder)!r}")


def _mnist_part(folder: Path, prefix: str) -> Split:
    images = read_idx(_find(folder, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST {prefix}: images {images.shape} and labels {labels.shape} do not match; "
            "expected (N, H, W) images and (N,) labels"
        )
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return Split(x, torch.from_numpy(labels.astype(np.int64)), 10)


def mnist(path: str) -> RawData:
    """MNIST from a folder of the four IDX files (gzipped or not), under their usual names."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {str(folder)!r} does not exist; expected a folder with the IDX files")
    return RawData("mnist", _mnist_part(folder, "train"), _mnist_part(folder, "t10k"))
