"""Built-in data-set plugins held in memory: scikit-learn's digits (embedded), MNIST from IDX files
and a user's own arrays in an ``.npz`` file (images or table rows). Folders of image files and
torchvision data sets, read one file at a time: :mod:`shrinkflow.core.images`; tables in CSV /
Parquet files: :func:`shrinkflow.core.tables.table`.

Each returns :class:`RawData` or raises :class:`DataError` naming the file and what was expected;
none of them unpickles anything.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from shrinkflow.core.data import DataError, RawData, Source, TensorSource, array_fingerprint
from shrinkflow.core.images import image_folder
from shrinkflow.core.tables import feature_array

__all__ = ["digits", "image_folder", "mnist", "npz", "read_idx"]


def digits() -> RawData:
    """The 1,797 8x8 handwritten digits shipped inside scikit-learn (no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    return RawData("digits", TensorSource(x, y, 10))


_IDX_DTYPES = {0x08: np.uint8}


def _idx_layout(path: Path, raw: bytes, size: int) -> tuple[tuple[int, ...], int]:
    """(shape, header bytes) of an IDX file whose first bytes are ``raw`` and length ``size``."""
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
    if size != expected:
        raise DataError(
            f"IDX file {str(path)!r} holds {size} bytes; its header {shape} needs {expected} (truncated or corrupt)"
        )
    return shape, header


def _file_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise DataError(f"IDX file {str(path)!r} cannot be read: {exc}") from exc


def _unzipped(path: Path, raw: bytes) -> bytes:
    """``raw``, the bytes of ``path``, decompressed when it is a ``.gz`` file."""
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"IDX file {str(path)!r} is not a readable gzip file: {exc}") from exc


def _read(path: Path) -> bytes:
    return _unzipped(path, _file_bytes(path))


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or plain). Only unsigned-byte data, the MNIST format, is accepted."""
    raw = _read(path)
    shape, header = _idx_layout(path, raw, len(raw))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _cache() -> Path:
    return Path(os.environ.get("SHRINKFLOW_CACHE", Path.home() / ".cache" / "shrinkflow"))


def map_idx(path: Path) -> tuple[Path, tuple[int, ...], int]:
    """(plain file, shape, header bytes) of an IDX file to memory-map; a ``.gz`` file is
    decompressed once into the cache (``$SHRINKFLOW_CACHE``, default ``~/.cache/shrinkflow``),
    named after its content's digest, written atomically."""
    plain = path
    if path.suffix == ".gz":
        raw = _file_bytes(path)
        plain = _cache() / "idx" / f"{path.stem}-{hashlib.sha256(raw).hexdigest()[:16]}"
        if not plain.exists():
            plain.parent.mkdir(parents=True, exist_ok=True)
            partial = plain.with_name(plain.name + f".{os.getpid()}.partial")
            partial.write_bytes(_unzipped(path, raw))
            os.replace(partial, plain)
    if not plain.is_file():
        raise DataError(f"IDX file {str(plain)!r} does not exist")
    with plain.open("rb") as handle:
        head = handle.read(4 + 4 * 4)
    shape, header = _idx_layout(plain, head, plain.stat().st_size)
    return plain, shape, header


class MappedImages(Source):
    """uint8 images (N, H, W) in a file mapped into memory (``np.memmap``): rows are read from disk
    (through the page cache) when a batch indexes them; the process never holds the whole array."""

    def __init__(
        self, file: Path, shape: tuple[int, ...], offset: int, labels: torch.Tensor, num_classes: int
    ) -> None:
        self.file, self.shape, self.offset = file, shape, offset
        self.labels, self.num_classes = labels, num_classes
        self._open()

    def _open(self) -> None:
        self.x = np.memmap(self.file, dtype=np.uint8, mode="r", offset=self.offset, shape=self.shape)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("x")  # a DataLoader worker maps the file itself instead of receiving a copy
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def item(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.x[index]))[None]

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.x[indices.numpy()])[:, None]

    def fingerprint(self) -> str:
        # the in-memory source's: a split cut from one reads from the other
        n, h, w = self.shape
        return array_fingerprint((n, 1, h, w), str(torch.uint8), self.labels)

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        return [row.tobytes() for row in self.x[indices.numpy()].reshape(len(indices), -1)]


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    raise DataError(f"MNIST file {stem}[.gz] not found in {str(folder)!r}")


def _mnist_part(folder: Path, prefix: str, memory_map: bool = False) -> Source:
    labels = read_idx(_find(folder, f"{prefix}-labels-idx1-ubyte"))
    images_file = _find(folder, f"{prefix}-images-idx3-ubyte")
    if memory_map:
        plain, shape, offset = map_idx(images_file)
    else:
        images = read_idx(images_file)
        shape = images.shape
    if len(shape) != 3 or labels.ndim != 1 or shape[0] != labels.shape[0]:
        raise DataError(
            f"MNIST {prefix}: images {shape} and labels {labels.shape} do not match; "
            "expected (N, H, W) images and (N,) labels"
        )
    y = torch.from_numpy(labels.astype(np.int64))
    if memory_map:
        return MappedImages(plain, shape, offset, y, 10)
    # uint8 in memory (a quarter of float32); batches are scaled to [0, 1] as they are read
    return TensorSource(torch.from_numpy(images.copy()).unsqueeze(1), y, 10)


def mnist(path: str, memory_map: bool = False) -> RawData:
    """MNIST from a folder of the four IDX files (gzipped or not), under their usual names.
    ``memory_map``: read the images from disk batch by batch (gzipped files are decompressed once
    into a cache) instead of holding them in memory; the batches are the same."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"MNIST folder {str(folder)!r} does not exist; expected a folder with the IDX files")
    return RawData("mnist", _mnist_part(folder, "train", memory_map), _mnist_part(folder, "t10k", memory_map))


def _images(x: np.ndarray, where: str) -> torch.Tensor:
    """(N, H, W) or (N, C, H, W) array -> (N, C, H, W): uint8 kept (scaled to [0, 1] as batches are
    read), other integers scaled from 0..255 to float32, floats as float32."""
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise DataError(
            f"{where}: images have shape {x.shape}; expected (N, H, W) or (N, C, H, W) images, or (N, F) table rows"
        )
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x))
    if np.issubdtype(x.dtype, np.integer):
        return torch.from_numpy(x.astype(np.float32) / 255.0)
    if np.issubdtype(x.dtype, np.floating):
        return torch.from_numpy(x.astype(np.float32))
    raise DataError(f"{where}: images have dtype {x.dtype}; expected integers (0..255) or floats (0..1)")


def _inputs(x: np.ndarray, where: str) -> torch.Tensor:
    """(N, F) -> table rows as they are; anything else is read as images."""
    return feature_array(x, where) if x.ndim == 2 else _images(x, where)


def _feature_names(arrays: dict[str, np.ndarray], n_features: int, file: Path) -> tuple[str, ...] | None:
    names = arrays.get("feature_names")
    if names is None:
        return None
    if names.dtype.kind not in "US" or names.shape != (n_features,):
        raise DataError(
            f"npz file {str(file)!r}: feature_names has shape {names.shape} and dtype {names.dtype}; "
            f"expected {n_features} strings, one per column of x"
        )
    return tuple(str(n) for n in names)


def _labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"{where}: labels have shape {y.shape} for {n} images; expected ({n},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels have dtype {y.dtype}; expected integers (class indices)")
    return torch.from_numpy(y.astype(np.int64))


def npz(path: str, num_classes: int | None = None) -> RawData:
    """Arrays in a NumPy ``.npz`` file: ``x`` images (N, H, W) or (N, C, H, W), integers 0..255 or
    floats 0..1, or table rows (N, F) of numbers, kept as they are; ``y`` (N,) class indices;
    optionally ``x_test``/``y_test`` (a fixed test set), ``num_classes`` and, for tables,
    ``feature_names`` (F strings). Without ``num_classes`` (option or key) it is the largest label + 1.
    Read with ``allow_pickle=False``: an object array is refused, not unpickled."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"npz file {str(file)!r} does not exist")
    try:
        with np.load(file, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # zipfile, zlib and ValueError (pickled objects) all mean unreadable
        raise DataError(f"npz file {str(file)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    missing = {"x", "y"} - set(arrays)
    if missing:
        raise DataError(
            f"npz file {str(file)!r} holds {sorted(arrays)}; expected keys 'x' and 'y' (missing {sorted(missing)})"
        )
    x = _inputs(arrays["x"], f"npz {str(file)!r} x")
    y = _labels(arrays["y"], x.shape[0], f"npz {str(file)!r} y")
    test = None
    if "x_test" in arrays or "y_test" in arrays:
        if not {"x_test", "y_test"} <= set(arrays):
            raise DataError(f"npz file {str(file)!r}: a fixed test set needs both 'x_test' and 'y_test'")
        xt = _inputs(arrays["x_test"], f"npz {str(file)!r} x_test")
        test_labels = _labels(arrays["y_test"], xt.shape[0], f"npz {str(file)!r} y_test")
    if num_classes is None and "num_classes" in arrays:
        num_classes = int(arrays["num_classes"])
    if num_classes is None:
        labels = [y] + ([test_labels] if "x_test" in arrays else [])
        num_classes = int(max((int(t.max()) for t in labels if t.numel()), default=-1)) + 1
    if not isinstance(num_classes, int) or num_classes < 1:
        raise DataError(f"npz file {str(file)!r}: num_classes={num_classes!r}; expected an integer >= 1")
    if "x_test" in arrays:
        test = TensorSource(xt, test_labels, num_classes)
    names = _feature_names(arrays, int(x.shape[1]), file) if x.ndim == 2 else None
    return RawData(file.stem, TensorSource(x, y, num_classes), test, feature_names=names)
