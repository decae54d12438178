"""Built-in data sets: scikit-learn's digits, and MNIST read from IDX files (gzipped or plain)."""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from shrinkflow.core.data import DataError, Source, Split, check_source
from shrinkflow.core.datasets import digits, mnist, read_idx

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file: big-endian magic (0x0000, type 0x08, rank), big-endian dims, then the bytes."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _arrays(n_train: int = 6, n_test: int = 4, side: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, (n_train, side, side), dtype=np.uint8)
    train_images[0, 0, 0], train_images[0, 0, 1] = 0, 255  # both ends of the scale
    return {
        "train-images-idx3-ubyte": train_images,
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }


def _write(folder: Path, arrays: dict[str, np.ndarray], gz: bool = True) -> None:
    for stem, array in arrays.items():
        data = _idx(array)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)


def _read(source: Source) -> torch.Tensor:
    """Every input of ``source`` as a split reads it: float32, uint8 scaled to [0, 1]."""
    return Split(source, torch.arange(len(source))).x


def test_header_helper_writes_the_mnist_magic_numbers():
    assert _idx(np.zeros((2, 3, 4), np.uint8))[:4] == IMAGES_MAGIC.to_bytes(4, "big")
    assert _idx(np.zeros(2, np.uint8))[:4] == LABELS_MAGIC.to_bytes(4, "big")
    assert _idx(np.zeros((2, 3, 4), np.uint8))[4:16] == bytes([0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4])


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_mnist_reads_idx_files_and_scales_to_unit_range(tmp_path, gz):
    arrays = _arrays()
    _write(tmp_path, arrays, gz=gz)
    raw = mnist(str(tmp_path))
    assert raw.name == "mnist" and raw.test is not None
    for split, prefix in ((raw.data, "train"), (raw.test, "t10k")):
        images, labels = arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"]
        # held as uint8 (a quarter of float32), scaled to [0, 1] as batches are read
        assert split.x.shape == (len(labels), 1, 5, 5) and split.x.dtype == torch.uint8
        assert torch.equal(split.x, torch.from_numpy(images).unsqueeze(1))
        assert split.y.dtype == torch.int64 and split.y.tolist() == labels.tolist()
        assert split.num_classes == 10
        read = _read(split)
        assert read.dtype == torch.float32
        assert torch.equal(read, torch.from_numpy(images).float().unsqueeze(1) / 255.0)
        check_source(split, prefix)
    data = _read(raw.data)
    assert float(data[0, 0, 0, 0]) == 0.0 and float(data[0, 0, 0, 1]) == 1.0
    assert float(data.min()) >= 0.0 and float(data.max()) <= 1.0


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_memory_mapped_mnist_reads_the_same_batches_from_disk(tmp_path, monkeypatch, gz):
    import pickle

    monkeypatch.setenv("SHRINKFLOW_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mnist").mkdir()
    _write(tmp_path / "mnist", _arrays(n_train=40, n_test=20), gz=gz)
    held, mapped = mnist(str(tmp_path / "mnist")), mnist(str(tmp_path / "mnist"), memory_map=True)
    for a, b in ((held.data, mapped.data), (held.test, mapped.test)):
        assert type(b).__name__ == "MappedImages" and isinstance(b.x, np.memmap)
        assert b.fingerprint() == a.fingerprint()  # a split cut from one reads from the other
        assert torch.equal(_read(a), _read(b)) and torch.equal(a.labels, b.labels)
        idx = torch.tensor([7, 3, 11])
        assert torch.equal(b.batch(idx), a.batch(idx)) and torch.equal(b.item(5), a.item(5))
        again = pickle.loads(pickle.dumps(b))  # a DataLoader worker maps the file itself
        assert isinstance(again.x, np.memmap) and torch.equal(again.item(5), a.item(5))
    cached = list((tmp_path / "cache" / "idx").glob("*")) if gz else []
    assert len(cached) == (2 if gz else 0)  # gzipped images decompressed once into the cache


def test_a_truncated_file_is_refused_before_it_is_mapped(tmp_path):
    arrays = _arrays()
    _write(tmp_path, arrays, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"holds 161 bytes; its header \(6, 5, 5\) needs 166"):
        mnist(str(tmp_path), memory_map=True)


def test_gzipped_and_plain_files_can_be_mixed_and_gz_wins(tmp_path):
    arrays = _arrays()
    _write(tmp_path, {k: v for k, v in arrays.items() if k.startswith("train")}, gz=True)
    _write(tmp_path, {k: v for k, v in arrays.items() if k.startswith("t10k")}, gz=False)
    # a stale plain copy next to the gzipped one is ignored
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(6, np.uint8)))
    raw = mnist(str(tmp_path))
    assert raw.data.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert raw.test is not None and raw.test.y.tolist() == [3, 2, 1, 0]


def test_read_idx_returns_the_array_with_its_shape(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx(array))
    out = read_idx(tmp_path / "a")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4) and np.array_equal(out, array)


# --- errors ---------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    folder = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match=rf"MNIST folder '{re.escape(str(folder))}' does not exist"):
        mnist(str(folder))


@pytest.mark.parametrize("stem", STEMS)
def test_missing_file_names_the_file_and_folder(tmp_path, stem):
    _write(tmp_path, _arrays())
    (tmp_path / f"{stem}.gz").unlink()
    with pytest.raises(
        DataError, match=rf"MNIST file {stem}\[\.gz\] not found in '{re.escape(str(tmp_path))}'"
    ):
        mnist(str(tmp_path))


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
@pytest.mark.parametrize("cut", [1, 10, 40])
def test_truncated_file_names_the_file_and_sizes(tmp_path, gz, cut):
    arrays = _arrays()
    _write(tmp_path, arrays, gz=gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    data = _idx(arrays["train-images-idx3-ubyte"])[:-cut]
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as info:
        mnist(str(tmp_path))
    message = str(info.value)
    assert f"IDX file '{tmp_path / name}' holds {len(data)} bytes" in message
    assert f"its header (6, 5, 5) needs {16 + 150} (truncated or corrupt)" in message


def test_a_file_cut_inside_its_header_is_refused(tmp_path):
    (tmp_path / "short").write_bytes(_idx(np.zeros((2, 3, 4), np.uint8))[:9])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match=r"'.*tiny' has no IDX magic number"):
        read_idx(tmp_path / "tiny")


@pytest.mark.parametrize("magic", [0x12340803, 0x01000801, 0x89504E47])
def test_bad_magic_names_the_file(tmp_path, magic):
    arrays = _arrays()
    _write(tmp_path, arrays)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(arrays["t10k-images-idx3-ubyte"], magic=magic)))
    with pytest.raises(DataError, match=rf"IDX file '{re.escape(str(path))}' has no IDX magic number"):
        mnist(str(tmp_path))


@pytest.mark.parametrize(("dtype", "text"), [(0x0D, "0x0d"), (0x09, "0x09"), (0x0C, "0x0c")])
def test_unsupported_idx_data_type_is_named(tmp_path, dtype, text):
    array = np.zeros((2, 2), np.uint8)
    (tmp_path / "f").write_bytes(_idx(array, magic=(dtype << 8) | 2))
    with pytest.raises(DataError, match=rf"has data type {text}; expected 0x08 \(unsigned byte\)"):
        read_idx(tmp_path / "f")


@pytest.mark.parametrize(
    "content",
    [b"\x1f\x8bgarbage", b"not gzip at all", b"\x1f\x8b"],
    ids=["bad-header", "no-magic", "header-only"],
)
def test_unreadable_gzip_names_the_file(tmp_path, content):
    _write(tmp_path, _arrays())
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=rf"IDX file '{re.escape(str(path))}' is not a readable gzip file"):
        mnist(str(tmp_path))


def test_an_empty_gzip_file_has_no_idx_header(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"IDX file '{re.escape(str(path))}' has no IDX magic number"):
        read_idx(path)


def test_gzip_cut_short_names_the_file(tmp_path):
    _write(tmp_path, _arrays())
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match=rf"IDX file '{re.escape(str(path))}' is not a readable gzip file"):
        mnist(str(tmp_path))


def test_corrupt_gzip_stream_is_a_data_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    # a valid 10-byte gzip header, then a deflate block of reserved type 11: "invalid block type"
    path.write_bytes(bytes.fromhex("1f8b0800000000000003") + b"\xff\xff\xff\xff" + bytes(8))
    with pytest.raises(DataError, match=rf"IDX file '{re.escape(str(path))}' is not a readable gzip file"):
        read_idx(path)


@pytest.mark.parametrize(("n_images", "n_labels"), [(4, 3), (4, 5)])
def test_image_and_label_counts_must_match(tmp_path, n_images, n_labels):
    arrays = _arrays(n_test=n_images)
    arrays["t10k-labels-idx1-ubyte"] = np.zeros(n_labels, np.uint8)
    _write(tmp_path, arrays)
    with pytest.raises(
        DataError, match=rf"MNIST t10k: images \({n_images}, 5, 5\) and labels \({n_labels},\) do not match"
    ):
        mnist(str(tmp_path))


def test_labels_of_the_wrong_rank_are_refused(tmp_path):
    arrays = _arrays()
    arrays["train-labels-idx1-ubyte"] = np.zeros((6, 1), np.uint8)
    _write(tmp_path, arrays)
    with pytest.raises(DataError, match=r"MNIST train: images \(6, 5, 5\) and labels \(6, 1\) do not match"):
        mnist(str(tmp_path))


# --- digits ---------------------------------------------------------------------------------------


def test_digits_is_embedded_and_scaled():
    raw = digits()
    assert raw.name == "digits" and raw.test is None
    x, y = raw.data.x, raw.data.y
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x * 16, (x * 16).round())  # 17 grey levels, 0..16, scaled by 1/16
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert raw.data.num_classes == 10
    check_source(raw.data, "digits")


# --- npz -------------------------------------------------------------------------------------

from shrinkflow.core.datasets import image_folder, npz  # noqa: E402


def test_npz_reads_uint8_and_float_images_and_a_fixed_test_set(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    path = tmp_path / "mine.npz"
    np.savez(
        path, x=x, y=np.array([0, 2]), x_test=np.full((1, 1, 3, 4), 0.5, np.float32), y_test=np.array([1])
    )
    raw = npz(str(path))
    assert raw.name == "mine" and raw.data.x.shape == (2, 1, 3, 4) and raw.test.x.shape == (1, 1, 3, 4)
    assert raw.data.x.dtype == torch.uint8 and torch.equal(raw.data.x[:, 0], torch.from_numpy(x))
    assert torch.allclose(_read(raw.data)[0, 0], torch.from_numpy(x[0] / 255.0).float())
    assert float(raw.test.x.max()) == 0.5
    assert raw.data.num_classes == raw.test.num_classes == 3  # largest label + 1
    np.savez(path, x=x, y=np.array([0, 2]), num_classes=10)
    assert npz(str(path)).data.num_classes == 10
    assert npz(str(path), num_classes=4).data.num_classes == 4


@pytest.mark.parametrize(
    ("arrays", "text"),
    [
        ({"x": np.zeros((2, 3, 3))}, "expected keys 'x' and 'y' (missing ['y'])"),
        (
            {"x": np.zeros(2), "y": np.zeros(2, np.int64)},
            "images have shape (2,); expected (N, H, W) or (N, C, H, W) images, or (N, F) table rows",
        ),
        (
            {"x": np.zeros((2, 3, 3)), "y": np.zeros(3, np.int64)},
            "labels have shape (3,) for 2 images; expected (2,)",
        ),
        ({"x": np.zeros((2, 3, 3)), "y": np.zeros(2)}, "labels have dtype float64; expected integers"),
        ({"x": np.zeros((2, 3, 3), bool), "y": np.zeros(2, np.int64)}, "images have dtype bool"),
        (
            {"x": np.zeros((2, 3, 3)), "y": np.zeros(2, np.int64), "x_test": np.zeros((1, 3, 3))},
            "needs both 'x_test' and 'y_test'",
        ),
    ],
)
def test_npz_errors_name_the_file_and_what_was_expected(tmp_path, arrays, text):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        npz(str(path))
    assert text in str(err.value) and "bad.npz" in str(err.value)


def test_npz_never_unpickles(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(
        DataError, match="cannot be read: ValueError: Object arrays cannot be loaded when allow_pickle=False"
    ):
        npz(str(path))
    with pytest.raises(DataError, match="does not exist"):
        npz(str(tmp_path / "none.npz"))
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"cut\.npz' cannot be read: BadZipFile"):
        npz(str(tmp_path / "cut.npz"))


# --- image folders ---------------------------------------------------------------------------


def _pngs(root: Path, sizes: dict[str, list[int]], mode: str = "L") -> None:
    from PIL import Image

    for name, sides in sizes.items():
        (root / name).mkdir(parents=True)
        for i, side in enumerate(sides):
            shape = (side, side) if mode == "L" else (side, side, 3)
            Image.fromarray(np.full(shape, 51 * (i + 1), np.uint8), mode).save(root / name / f"{i}.png")


def test_image_folder_labels_by_sorted_class_folder_and_scales(tmp_path):
    _pngs(tmp_path / "train", {"cat": [6, 6], "ant": [6]})
    _pngs(tmp_path / "test", {"ant": [6], "cat": [6]})
    (tmp_path / "train/cat/notes.txt").write_text("not an image")
    raw = image_folder(str(tmp_path / "train"), test_path=str(tmp_path / "test"))
    x = _read(raw.data)
    assert x.shape == (3, 1, 6, 6) and raw.data.labels.tolist() == [0, 1, 1]  # ant=0, cat=1
    assert x[1].max().item() == pytest.approx(51 / 255)
    assert raw.test.labels.tolist() == [0, 1] and raw.data.num_classes == 2
    rgb = tmp_path / "rgb"
    _pngs(rgb, {"a": [4], "b": [4]}, mode="RGB")
    assert _read(image_folder(str(rgb), channels=3).data).shape == (2, 3, 4, 4)


def test_image_folder_refuses_mixed_sizes_in_a_batch_naming_an_example_of_each(tmp_path):
    _pngs(tmp_path, {"a": [8, 8, 8], "b": [8, 9]})
    raw = image_folder(str(tmp_path))  # files are listed, not decoded: loading succeeds
    assert len(raw.data) == 5
    with pytest.raises(DataError) as err:
        _read(raw.data)
    text = str(err.value)
    assert "one batch holds samples of 2 shapes ((1, 8, 8) e.g." in text and "(1, 9, 9) e.g." in text
    assert str(tmp_path / "a" / "0.png") in text and str(tmp_path / "b" / "1.png") in text
    assert "expected one shape: add a `resize`" in text
    # a batch of same-sized files reads; a resize step makes the whole folder one size
    assert Split(raw.data, torch.arange(4)).x.shape == (4, 1, 8, 8)
    assert Split(raw.data, torch.arange(5), transforms=({"resize": [8, 8]},)).x.shape == (5, 1, 8, 8)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist; expected <folder>/<class name>/<image files>"):
        image_folder(str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders"):
        image_folder(str(tmp_path / "empty"))
    _pngs(tmp_path / "data", {"a": [4]})
    (tmp_path / "data/a/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    broken = image_folder(str(tmp_path / "data")).data  # decoded when read, not when listed
    with pytest.raises(DataError, match=r"image file '.*broken.png' cannot be read"):
        _read(broken)
    _pngs(tmp_path / "t", {"zebra": [4]})
    (tmp_path / "data/a/broken.png").unlink()
    with pytest.raises(DataError, match=r"has classes \['zebra'\] that the training folder lacks"):
        image_folder(str(tmp_path / "data"), test_path=str(tmp_path / "t"))
    with pytest.raises(DataError, match="channels=2"):
        image_folder(str(tmp_path / "data"), channels=2)
