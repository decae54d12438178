"""Image data sets read one file at a time: a folder with one sub-folder per class, and any
``torchvision.datasets`` class.

Listing a folder reads names only; an image is decoded when a batch needs it (in the training
process or a DataLoader worker), so memory does not grow with the number of files. Sizes may
differ between files when ``data.transforms`` resizes them; otherwise a batch mixing sizes fails
naming the files, and the ``raw_data`` suite, which reads every image's size, says so first.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrinkflow.core.data import DataError, RawData, Source

__all__ = ["ImageFiles", "TorchvisionSource", "image_folder", "torchvision_dataset"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_MODES = {1: "L", 3: "RGB"}


def decode(file: Path, channels: int) -> torch.Tensor:
    """One image file -> uint8 (C, H, W); DataError naming the file if it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            array = np.array(im.convert(_MODES[channels]), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"image file {str(file)!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(array[None] if channels == 1 else array.transpose(2, 0, 1).copy())


class ImageFiles(Source):
    """Image files and their labels, decoded on access to uint8 (C, H, W)."""

    def __init__(
        self, root: Path, files: list[Path], labels: list[int], classes: list[str], channels: int
    ) -> None:
        self.root, self.files, self.classes, self.channels = root, files, classes, channels
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.num_classes = len(classes)

    def item(self, index: int) -> torch.Tensor:
        return decode(self.files[index], self.channels)

    def describe(self, index: int) -> str:
        return repr(str(self.files[index]))

    def fingerprint(self) -> str:
        digest = hashlib.sha256(str((self.classes, self.channels)).encode())
        for file, label in zip(self.files, self.labels.tolist(), strict=True):
            digest.update(f"{file.relative_to(self.root).as_posix()}\0{label}\n".encode())
        return digest.hexdigest()

    def content_keys(self, indices: torch.Tensor) -> list[bytes]:
        # the file's bytes: equal files in two splits are leakage; reading is far cheaper than decoding
        return [hashlib.blake2b(self.files[int(i)].read_bytes(), digest_size=16).digest() for i in indices]


def _list_folder(root: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    if not root.is_dir():
        raise DataError(
            f"image folder {str(root)!r} does not exist; expected <folder>/<class name>/<image files>"
        )
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    classes = classes or found
    if not classes:
        raise DataError(
            f"image folder {str(root)!r} has no class sub-folders; expected <folder>/<class name>/<images>"
        )
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"image folder {str(root)!r} has classes {unknown} that the training folder lacks; expected {classes}"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files.append(file)
                labels.append(label)
    return files, labels, classes


def image_folder(path: str, test_path: str | None = None, channels: int = 1) -> RawData:
    """Image files (PNG, JPEG, ...) under ``<path>/<class name>/``; classes are the sub-folder
    names in sorted order. ``test_path``: a folder laid out the same way, kept as the test set.
    ``channels``: 1 (grayscale) or 3 (RGB). Files are listed here and decoded when read."""
    if channels not in _MODES:
        raise DataError(f"image_folder channels={channels!r}; expected 1 (grayscale) or 3 (RGB)")
    root = Path(path)
    files, labels, classes = _list_folder(root, None)
    data = ImageFiles(root, files, labels, classes, channels)
    test = None
    if test_path is not None:
        t_files, t_labels, _ = _list_folder(Path(test_path), classes)
        test = ImageFiles(Path(test_path), t_files, t_labels, classes, channels)
    return RawData(root.name, data, test)


class TorchvisionSource(Source):
    """A torchvision data set (PIL images or tensors, integer targets) as uint8 (C, H, W) items."""

    def __init__(self, dataset: Any, labels: torch.Tensor, num_classes: int, name: str) -> None:
        self.dataset, self.labels, self.num_classes, self.name = dataset, labels, num_classes, name

    def item(self, index: int) -> torch.Tensor:
        image = self.dataset[index][0]
        if isinstance(image, torch.Tensor):
            return image if image.ndim == 3 else image[None]
        array = np.array(image, dtype=np.uint8)
        return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1).copy())

    def describe(self, index: int) -> str:
        return f"{self.name}[{index}]"


def _targets(dataset: Any) -> torch.Tensor:
    """Labels without decoding images where the class keeps them (``targets`` / ``labels``)."""
    for attr in ("targets", "labels", "_labels"):
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return torch.as_tensor(np.asarray(values), dtype=torch.int64)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))], dtype=torch.int64)


def _make(cls: Any, name: str, root: str, download: bool, split: Any, options: dict[str, Any]) -> Any:
    import inspect

    params = inspect.signature(cls).parameters
    kwargs = dict(options)
    if "download" in params:
        kwargs["download"] = download
    if split is not None:
        kwargs["train" if "train" in params else "split"] = split
    try:
        return cls(root, **kwargs)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        hint = (
            "download: true on a machine with internet, or copy the files there"
            if not download
            else ("a machine that can reach the download server, or the files copied into root")
        )
        raise DataError(
            f"torchvision data set {name} found no usable files under root {root!r} ({exc}); "
            f"expected the files torchvision's {name} reads there ({hint})"
        ) from exc


def torchvision_dataset(
    name: str,
    root: str,
    download: bool = False,
    train_split: Any = True,
    test_split: Any = False,
    options: dict[str, Any] | None = None,
) -> RawData:
    """Any ``torchvision.datasets`` class by name (``CIFAR10``, ``CIFAR100``, ``FashionMNIST``,
    ``SVHN``, ``ImageFolder`` ...) under ``root``. ``train_split`` / ``test_split``: what the class
    takes as ``train=`` (True / False) or ``split=`` (``"train"`` / ``"test"`` for SVHN); a
    ``test_split`` of null keeps no fixed test set. ``download: true`` fetches the files (needs
    internet); offline, a missing file fails naming ``root`` and what the class expected there.
    ``options``: more keyword arguments of the class."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not isinstance(cls, type):
        known = sorted(n for n in dir(tvd) if n[0].isupper() and isinstance(getattr(tvd, n), type))
        raise DataError(f"torchvision data set {name!r} does not exist; expected one of {known}")
    opts = dict(options or {})
    single = name in ("ImageFolder", "DatasetFolder")
    pool = _make(cls, name, root, download, None if single else train_split, opts)
    parts = (
        [pool] if single or test_split is None else [pool, _make(cls, name, root, download, test_split, opts)]
    )
    sources = []
    for part in parts:
        labels = _targets(part)
        classes = getattr(part, "classes", None)
        num_classes = len(classes) if classes else int(labels.max()) + 1
        sources.append(TorchvisionSource(part, labels, num_classes, name))
    if len(sources) == 2 and sources[1].num_classes != sources[0].num_classes:
        sources[1].num_classes = sources[0].num_classes = max(s.num_classes for s in sources)
    return RawData(name.lower(), sources[0], sources[1] if len(sources) == 2 else None)
