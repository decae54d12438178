"""The tables Great Expectations sees: numbers per sample, per split and per stage."""

from __future__ import annotations

import math

import pytest
import torch

from shrinkflow.core.data import RawData, Split, TensorSource
from shrinkflow.validation.frames import quality_table, sample_stats, split_summary


def _source(n: int = 8, classes: int = 4) -> TensorSource:
    x = torch.linspace(0, 1, n * 4).reshape(n, 1, 2, 2)
    return TensorSource(x, torch.arange(n) % classes, classes)


def _split(n: int = 8, classes: int = 4) -> Split:
    source = _source(n, classes)
    return Split(source, torch.arange(n))


def test_sample_stats_counts_nan_and_inf_and_takes_min_max_over_finite_pixels():
    split = _source()
    split.x[1, 0, 0, 0] = float("nan")
    split.x[1, 0, 0, 1] = float("nan")
    split.x[2, 0, 1, 1] = float("inf")
    frame = sample_stats(RawData("t", split))
    assert len(frame) == 8 and set(frame["part"]) == {"data"}
    assert frame["nan_count"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0]
    assert frame["inf_count"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]
    # sample 1 keeps two finite pixels: its min and max come from them
    assert frame.loc[1, "min"] == pytest.approx(float(split.x[1, 0, 1, 0]))
    assert frame.loc[1, "max"] == pytest.approx(float(split.x[1, 0, 1, 1]))
    assert not frame[["min", "max", "mean"]].isna().any().any()
    assert (frame[["channels", "height", "width"]].to_numpy() == [1, 2, 2]).all()


def test_sample_stats_measures_balance_and_classes_present_per_part():
    pool = TensorSource(torch.zeros(10, 1, 2, 2), torch.tensor([0] * 7 + [1] * 3), 3)
    test = TensorSource(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 2, 2]), 3)
    frame = sample_stats(RawData("t", pool, test))
    data, held = frame[frame["part"] == "data"], frame[frame["part"] == "test"]
    # class 0 holds 7 of 10 samples: 0.7 / (1/3) = 2.1 times an even share
    assert data["class_balance"].iloc[0] == pytest.approx(2.1)
    assert data["class_balance"].iloc[-1] == pytest.approx(0.9)
    assert set(data["classes_present"]) == {2} and set(held["classes_present"]) == {3}
    assert set(frame["num_classes"]) == {3}


def test_sample_stats_of_an_empty_set_is_an_empty_frame():
    frame = sample_stats(
        RawData("t", TensorSource(torch.zeros(0, 1, 2, 2), torch.zeros(0, dtype=torch.int64), 10))
    )
    assert len(frame) == 0 and "nan_count" in frame


def test_split_summary_reports_shares_against_the_configuration_and_leaks():
    pool = _split(20, 2)
    train, val, test = (
        pool.with_indices(torch.arange(12)),
        pool.with_indices(torch.arange(12, 16)),
        _split(4, 2),
    )
    test.source.x[0] = train.source.x[3]  # one test image also in train
    frame = split_summary(train, val, test, val_fraction=0.2, test_fraction=0.2, fixed_test=False)
    rows = frame.set_index("split")
    assert rows["rows"].tolist() == [12, 4, 4]
    assert rows.loc["train", "share"] == pytest.approx(0.6) and rows.loc[
        "train", "expected_share"
    ] == pytest.approx(0.6)
    assert rows.loc["val", "share_error"] == pytest.approx(0.0)
    assert rows.loc["train", "shared_samples"] == 1 and rows.loc["test", "shared_samples"] == 1
    assert rows.loc["val", "shared_samples"] == 0


def test_a_fixed_test_set_has_no_expected_share():
    pool = _split(10, 2)
    train, val = pool.with_indices(torch.arange(8)), pool.with_indices(torch.arange(8, 10))
    frame = split_summary(train, val, _split(6, 2), val_fraction=0.2, test_fraction=0.3, fixed_test=True)
    rows = frame.set_index("split")
    assert rows.loc["train", "expected_share"] == pytest.approx(0.8)  # test_fraction unused
    assert math.isnan(rows.loc["test", "expected_share"]) and math.isnan(rows.loc["test", "share_error"])


def _metrics(acc: float, packed: int, sparsity: float) -> dict:
    return {"accuracy": acc, "packed_bytes": packed, "sparsity": sparsity, "artifact_bytes": 1}


def test_quality_table_measures_drop_and_packed_ratio_from_the_teacher():
    metrics = {
        "teacher": _metrics(0.98, 40_000, 0.0),
        "pruned": _metrics(0.97, 10_000, 0.8),
        "quantized": _metrics(0.95, 4_000, 0.8),
    }
    frame = quality_table(metrics, final="quantized").set_index("stage")
    assert frame["accuracy_drop"].tolist() == pytest.approx([0.0, 0.01, 0.03])
    assert frame["packed_compression_ratio"].tolist() == pytest.approx([1.0, 4.0, 10.0])
    assert frame["final"].tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("metrics", "final", "text"),
    [
        ({"pruned": _metrics(0.9, 1, 0.5)}, "pruned", "no teacher metrics"),
        ({"teacher": {"accuracy": 0.9}}, "teacher", "lack ['packed_bytes', 'sparsity']"),
        ({"teacher": _metrics(0.9, 1, 0.0)}, "quantized", "final='quantized' is not among"),
    ],
)
def test_quality_table_refuses_incomplete_metrics(metrics, final, text):
    with pytest.raises(ValueError, match="quality table") as err:
        quality_table(metrics, final)
    assert text in str(err.value)
