"""Image sources read one file at a time: a folder of class sub-folders and torchvision data sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrinkflow.core.data import DataError, split_data
from shrinkflow.core.images import image_folder, torchvision_dataset


def _folder(root: Path, per_class: int = 6, size: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for label, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[0, 0] = (label, i, 7)  # a marker: class and index
            Image.fromarray(pixels, "RGB").save(root / name / f"{i:03d}.png")
    return root


def test_a_folder_is_listed_not_decoded(tmp_path):
    root = _folder(tmp_path / "photos")
    (root / "dog" / "999.png").write_bytes(b"not a png")  # listed; fails only when read
    raw = image_folder(str(root), channels=3)
    assert len(raw.data) == 13 and raw.data.classes == ["cat", "dog"]
    assert raw.data.labels.tolist() == [0] * 6 + [1] * 7
    first = raw.data.item(0)
    assert first.dtype == torch.uint8 and first.shape == (3, 12, 12)
    assert first[:, 0, 0].tolist() == [0, 0, 7]
    assert raw.data.item(8)[:, 0, 0].tolist() == [1, 2, 7]
    with pytest.raises(DataError, match=r"image file '.*999.png' cannot be read"):
        raw.data.item(12)


def test_a_split_of_a_folder_reads_float_batches_with_the_right_labels(tmp_path):
    raw = image_folder(str(_folder(tmp_path / "photos", per_class=10)), channels=3)
    train, val, test = split_data(raw, 0.2, 0.2, seed=0)
    assert (len(train), len(val), len(test)) == (12, 4, 4)
    x, y = test.take(torch.arange(4))
    assert (
        x.dtype == torch.float32
        and x.shape == (4, 3, 12, 12)
        and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    )
    assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), y)  # the marker pixel holds the class


def test_the_fingerprint_follows_the_file_list_and_content_keys_the_bytes(tmp_path):
    root = _folder(tmp_path / "photos")
    raw = image_folder(str(root), channels=3)
    before = raw.data.fingerprint()
    keys = raw.data.content_keys(torch.arange(2))
    assert len(set(keys)) == 2
    (root / "cat" / "000.png").rename(root / "dog" / "100.png")
    assert image_folder(str(root), channels=3).data.fingerprint() != before


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fashion_mnist(root: Path, n: int = 20) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (count, 28, 28))))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(count) % 10))
    return root


def test_a_torchvision_data_set_in_its_on_disk_format(tmp_path):
    root = _fashion_mnist(tmp_path / "tv")
    raw = torchvision_dataset("FashionMNIST", str(root))
    assert (len(raw.data), len(raw.test), raw.data.num_classes) == (20, 10, 10)
    assert raw.data.labels.tolist() == [i % 10 for i in range(20)]
    item = raw.data.item(3)
    assert item.dtype == torch.uint8 and item.shape == (1, 28, 28)
    expected = np.frombuffer((root / "FashionMNIST/raw/train-images-idx3-ubyte").read_bytes()[16:], np.uint8)
    assert torch.equal(item[0], torch.from_numpy(expected.reshape(20, 28, 28)[3].copy()))


def test_torchvision_image_folder_keeps_no_fixed_test_set(tmp_path):
    raw = torchvision_dataset("ImageFolder", str(_folder(tmp_path / "photos")))
    assert raw.test is None and len(raw.data) == 12 and raw.data.item(0).shape == (3, 12, 12)


def test_offline_a_missing_data_set_names_the_root_and_what_it_expected(tmp_path):
    with pytest.raises(
        DataError, match=r"CIFAR10 found no usable files under root '.*empty'.*download: true"
    ):
        torchvision_dataset("CIFAR10", str(tmp_path / "empty"))


def test_an_unknown_torchvision_class_lists_the_known_ones(tmp_path):
    with pytest.raises(DataError, match=r"'CIFAR11' does not exist; expected one of \[.*'CIFAR10'"):
        torchvision_dataset("CIFAR11", str(tmp_path))
