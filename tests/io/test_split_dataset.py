"""SplitDataset: the file each DVC stage reads the split from; safe to read, checked like fresh data.

A split cut from a data-set plugin's source is stored as the positions of its samples, their
labels, the plugin that rebuilds the source and its fingerprint (not the samples); a split made
from tensors in memory stores its tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from shrinkflow.core.data import Split, split_data
from shrinkflow.io import SplitDataset
from shrinkflow.io.datasets import load_raw


def split(n: int = 12) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split.of(torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3, 3)


def test_round_trip_is_exact_and_leaves_no_temporary_file(tmp_path: Path):
    path = tmp_path / "model_input" / "train.pt"
    ds = SplitDataset(str(path))
    assert not ds.exists()
    ds.save(split())
    back = ds.load()
    assert torch.equal(back.x, split().x) and torch.equal(back.y, split().y) and back.num_classes == 3
    assert [p.name for p in path.parent.iterdir()] == ["train.pt"]


def test_a_truncated_file_is_refused_naming_it(tmp_path: Path):
    path = tmp_path / "train.pt"
    SplitDataset(str(path)).save(split())
    path.write_bytes(path.read_bytes()[:100])
    # Kedro wraps the loader's error; the message names the file and the cause
    with pytest.raises(DatasetError, match=r"split file '.*train.pt' cannot be read safely"):
        SplitDataset(str(path)).load()


def test_wrong_contents_and_bad_values_are_refused(tmp_path: Path):
    path = tmp_path / "x.pt"
    torch.save({"x": torch.zeros(2, 1, 4, 4)}, path)
    with pytest.raises(
        DatasetError,
        match=r"holds \['x'\]; expected a shrinkflow.split/2 split \(keys \[.*\]\): re-run the data stage",
    ):
        SplitDataset(str(path)).load()
    bad = split()
    bad.source.x[0, 0, 0, 0] = float("nan")
    SplitDataset(str(path)).save(bad)
    with pytest.raises(DatasetError, match=r"images contain 1 NaN"):
        SplitDataset(str(path)).load()


def test_a_split_file_of_the_old_format_is_refused_saying_to_rerun_the_data_stage(tmp_path: Path):
    path = tmp_path / "train.pt"
    old = split()
    torch.save({"x": old.x, "y": old.y, "num_classes": 3}, path)  # format 1: the tensors themselves
    with pytest.raises(DatasetError) as err:
        SplitDataset(str(path)).load()
    text = str(err.value)
    assert f"split file {str(path)!r} holds ['num_classes', 'x', 'y']" in text
    assert "expected a shrinkflow.split/2 split" in text and "re-run the data stage" in text


def test_only_splits_are_saved(tmp_path: Path):
    with pytest.raises(DatasetError, match="expected a Split to save, got dict"):
        SplitDataset(str(tmp_path / "x.pt")).save({"x": 1})


def test_table_rows_round_trip_unscaled(tmp_path: Path):
    rows = Split.of(torch.tensor([[650.5, 0.1], [-3.0, 1e4]]), torch.tensor([1, 0]), 2)
    ds = SplitDataset(str(tmp_path / "train.pt"))
    ds.save(rows)
    back = ds.load()
    assert back.x.tolist() == rows.x.tolist() and back.input_shape == (2,)


# --- splits of a plugin's source: indices + the plugin that rebuilds it ---------------------------


def _npz(path: Path, n: int = 60, flip: bool = False) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    if flip:
        y = y[::-1].copy()
    np.savez(path, x=rng.integers(0, 256, (n, 5, 5), dtype=np.uint8), y=y)


def test_a_plugin_split_stores_indices_not_samples_and_reloads_the_same_split(tmp_path: Path):
    _npz(tmp_path / "d.npz")
    raw = load_raw("npz", {"path": str(tmp_path / "d.npz")})
    train, val, test = split_data(raw, 0.2, 0.2, seed=0, transforms=["horizontal_flip"], channels=3)
    for part, name in ((train, "train"), (val, "val"), (test, "test")):
        path = tmp_path / f"{name}.pt"
        SplitDataset(str(path)).save(part)
        payload = torch.load(path, weights_only=True)
        assert payload["format"] == "shrinkflow.split/2" and "x" not in payload and "y" not in payload
        assert payload["origin"] == {
            "plugin": "npz",
            "options": {"path": str(tmp_path / "d.npz")},
            "part": "data",
        }
        assert torch.equal(payload["indices"], part.indices) and torch.equal(payload["labels"], part.y)
        back = SplitDataset(str(path)).load()
        assert torch.equal(back.indices, part.indices) and torch.equal(back.y, part.y)
        assert (back.transforms, back.train, back.channels) == (("horizontal_flip",), name == "train", 3)
        assert torch.equal(back.for_eval().x, part.for_eval().x) and back.input_shape == (3, 5, 5)
    assert len(train) + len(val) + len(test) == 60


def test_a_plugin_split_refuses_a_source_whose_labels_changed(tmp_path: Path):
    data = tmp_path / "d.npz"
    _npz(data)
    raw = load_raw("npz", {"path": str(data)})
    train, _, _ = split_data(raw, 0.2, 0.2, seed=0)
    path = tmp_path / "train.pt"
    SplitDataset(str(path)).save(train)
    _npz(data, flip=True)  # the same images, other labels
    stamp = data.stat().st_mtime_ns + 10**9
    os.utime(data, ns=(stamp, stamp))  # a rewritten file is read again, not served from the cache
    with pytest.raises(DatasetError) as err:
        SplitDataset(str(path)).load()
    text = str(err.value)
    assert f"split file {str(path)!r} was cut from" in text and "fingerprint" in text
    assert "(files or labels changed): re-run the data stage" in text
    _npz(data, n=30)  # fewer samples
    os.utime(data, ns=(stamp + 10**9, stamp + 10**9))
    with pytest.raises(DatasetError, match=r"that data set now has 30 samples"):
        SplitDataset(str(path)).load()
