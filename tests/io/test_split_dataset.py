"""SplitDataset: the file each DVC stage reads the split from; safe to read, checked like fresh data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from shrinkflow.core.data import Split
from shrinkflow.io import SplitDataset


def split(n: int = 12) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3, 3)


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
    with pytest.raises(DatasetError, match=r"holds \['x'\]; expected keys \['num_classes', 'x', 'y'\]"):
        SplitDataset(str(path)).load()
    bad = split()
    bad.x[0, 0, 0, 0] = float("nan")
    SplitDataset(str(path)).save(bad)
    with pytest.raises(DatasetError, match=r"images contain 1 NaN"):
        SplitDataset(str(path)).load()


def test_only_splits_are_saved(tmp_path: Path):
    with pytest.raises(DatasetError, match="expected a Split to save, got dict"):
        SplitDataset(str(tmp_path / "x.pt")).save({"x": 1})


def test_table_rows_round_trip_unscaled(tmp_path: Path):
    rows = Split(torch.tensor([[650.5, 0.1], [-3.0, 1e4]]), torch.tensor([1, 0]), 2)
    ds = SplitDataset(str(tmp_path / "train.pt"))
    ds.save(rows)
    back = ds.load()
    assert back.x.tolist() == rows.x.tolist() and back.input_shape == (2,)
