"""The table frame: one row per feature column, named so a failing check names the column."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core.data import RawData, TensorSource
from shrinkflow.validation.frames import FRAMES, data_modality
from shrinkflow.validation.tables import column_stats


def test_column_stats_has_one_row_per_column_and_counts_over_finite_values():
    x = torch.tensor([[1.0, 200.0, -3.0], [3.0, float("inf"), -1.0], [float("nan"), 400.0, 2.0]])
    frame = column_stats(
        RawData("t", TensorSource(x, torch.tensor([0, 1, 1]), 2), feature_names=("a", "b", "c"))
    )
    assert frame["column"].tolist() == ["data.a", "data.b", "data.c"]
    assert frame["nan_count"].tolist() == [1, 0, 0] and frame["inf_count"].tolist() == [0, 1, 0]
    assert frame["min"].tolist() == [1.0, 200.0, -3.0] and frame["max"].tolist() == [3.0, 400.0, 2.0]
    assert frame["mean"].tolist() == pytest.approx([2.0, 300.0, -2 / 3])
    assert frame["std"].tolist() == pytest.approx([1.0, 100.0, (38 / 9) ** 0.5])
    assert set(frame["rows"]) == {3} and set(frame["label_max"]) == {1}


def test_column_stats_measures_labels_and_balance_per_part_and_names_unnamed_columns():
    pool = TensorSource(torch.zeros(10, 2), torch.tensor([0] * 8 + [1] * 2), 3)
    test = TensorSource(torch.zeros(4, 2), torch.tensor([0, 1, 2, 5]), 3)
    frame = column_stats(RawData("t", pool, test))
    assert frame["column"].tolist() == ["data.x[:, 0]", "data.x[:, 1]", "test.x[:, 0]", "test.x[:, 1]"]
    data, held = frame[frame["part"] == "data"].iloc[0], frame[frame["part"] == "test"].iloc[0]
    # class 0: 8 of 10 rows = 2.4x an even third; class 2 absent = 0x
    assert data["class_balance_max"] == pytest.approx(2.4) and data["class_balance_min"] == 0.0
    assert data["classes_present"] == 2 and held["classes_present"] == 3 and held["label_max"] == 5


def test_the_frame_and_the_modality_come_from_the_data():
    rows = RawData("t", TensorSource(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64), 1))
    images = RawData("t", TensorSource(torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.int64), 1))
    assert data_modality(rows) == "table" and data_modality(images) == "image"
    assert data_modality("a frame") is None
    assert FRAMES["column_stats"] is column_stats
