"""OnnxDataset: the exported model file, written atomically and checked when read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kedro.io import DatasetError

from shrinkflow.core.export import to_onnx
from shrinkflow.io import OnnxDataset


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    torch.manual_seed(0)
    return to_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)), torch.rand(2, 1, 4, 4))


def test_round_trip_is_exact_and_leaves_no_temporary_file(tmp_path: Path, onnx_bytes: bytes):
    path = tmp_path / "models" / "final.onnx"
    ds = OnnxDataset(str(path))
    assert not ds.exists()
    ds.save(onnx_bytes)
    assert ds.exists() and ds.load() == onnx_bytes
    assert [p.name for p in path.parent.iterdir()] == ["final.onnx"]


def test_a_truncated_file_is_refused_naming_it(tmp_path: Path, onnx_bytes: bytes):
    path = tmp_path / "final.onnx"
    path.write_bytes(onnx_bytes[: len(onnx_bytes) // 2])
    with pytest.raises(
        DatasetError, match=rf"ONNX model '{path}' \({len(onnx_bytes) // 2} bytes\) is not a valid"
    ):
        OnnxDataset(str(path)).load()


def test_a_missing_file_says_which_pipeline_writes_it(tmp_path: Path):
    with pytest.raises(DatasetError, match="does not exist; run the export pipeline first"):
        OnnxDataset(str(tmp_path / "none.onnx")).load()


def test_saving_something_else_is_refused_and_keeps_the_old_file(tmp_path: Path, onnx_bytes: bytes):
    path = tmp_path / "final.onnx"
    ds = OnnxDataset(str(path))
    ds.save(onnx_bytes)
    with pytest.raises(DatasetError, match="expected ONNX bytes to save, got str"):
        ds.save("model")  # type: ignore[arg-type]
    assert path.read_bytes() == onnx_bytes
