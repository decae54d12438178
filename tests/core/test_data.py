"""The train/val/test split and the data checks every split passes through."""

from __future__ import annotations

import math

import pytest
import torch

from shrinkflow.core.data import (
    DataError,
    RawData,
    Split,
    TensorSource,
    calibration_batches,
    check_source,
    split_data,
)


def _indexed(raw: RawData) -> RawData:
    """A copy of ``raw`` whose sample i carries its own index in pixel (0, 0, 0)."""
    x = raw.data.x.clone()
    x[:, 0, 0, 0] = torch.arange(len(raw.data), dtype=x.dtype)
    return RawData(raw.name, TensorSource(x, raw.data.y.clone(), raw.data.num_classes))


def _ids(split: Split) -> list[int]:
    return split.x[:, 0, 0, 0].long().tolist()


def _good(n: int = 6) -> TensorSource:
    return TensorSource(torch.rand(n, 1, 4, 4), torch.arange(n) % 3, 3)


# --- split_data -----------------------------------------------------------------------------------


def test_sizes_match_the_fractions(digits_raw):
    n = len(digits_raw.data)
    train, val, test = split_data(digits_raw, 0.15, 0.2, seed=0)
    assert n == 1797
    assert len(train) + len(val) + len(test) == n
    assert abs(len(test) - 0.2 * n) <= 1
    assert abs(len(val) - 0.15 * n) <= 1
    assert (len(train), len(val), len(test)) == (1167, 270, 360)


@pytest.mark.parametrize(("val_fraction", "test_fraction"), [(0.1, 0.1), (0.25, 0.4), (0.5, 0.05)])
def test_other_fractions_are_respected(digits_raw, val_fraction, test_fraction):
    n = len(digits_raw.data)
    train, val, test = split_data(digits_raw, val_fraction, test_fraction, seed=3)
    assert abs(len(test) - test_fraction * n) <= 1
    assert abs(len(val) - val_fraction * n) <= 1
    assert len(train) == n - len(val) - len(test)


def test_splits_are_disjoint_and_cover_the_pool(digits_raw):
    raw = _indexed(digits_raw)
    train, val, test = split_data(raw, 0.15, 0.2, seed=0)
    ids = [_ids(s) for s in (train, val, test)]
    sets = [set(i) for i in ids]
    assert [len(s) for s in sets] == [len(i) for i in ids]  # no duplicates inside a split
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(len(raw.data)))


def test_each_sample_keeps_its_label_and_image(digits_raw):
    raw = _indexed(digits_raw)
    for split in split_data(raw, 0.15, 0.2, seed=0):
        idx = torch.tensor(_ids(split))
        assert torch.equal(split.y, raw.data.y[idx])
        assert torch.equal(split.x, raw.data.x[idx])
        assert split.num_classes == 10 and split.x.dtype == torch.float32 and split.y.dtype == torch.int64


def test_stratification_keeps_class_proportions(digits_raw):
    pool_counts = torch.bincount(digits_raw.data.y, minlength=10).double()
    n = len(digits_raw.data)
    for split in split_data(digits_raw, 0.15, 0.2, seed=0):
        counts = torch.bincount(split.y, minlength=10).double()
        expected = pool_counts * len(split) / n
        # every class within 2 samples of its exact share (a random split of 270 is off by ~5)
        assert float((counts - expected).abs().max()) <= 2.0, (counts, expected)


def test_stratification_keeps_a_rare_class_in_every_split():
    # 10 samples of class 1 among 190 of class 0: a plain shuffle often leaves val without class 1
    y = torch.cat([torch.zeros(190, dtype=torch.int64), torch.ones(10, dtype=torch.int64)])
    raw = RawData("rare", TensorSource(torch.rand(200, 1, 2, 2), y, 2))
    for seed in range(5):
        train, val, test = split_data(raw, 0.2, 0.2, seed=seed)
        assert [int(s.y.sum()) for s in (train, val, test)] == [6, 2, 2]


def test_a_class_with_one_sample_falls_back_to_a_plain_split():
    y = torch.cat([torch.arange(20) % 2, torch.tensor([2])])  # class 2 appears once
    raw = _indexed(RawData("odd", TensorSource(torch.rand(21, 1, 2, 2), y, 3)))
    train, val, test = split_data(raw, 0.2, 0.2, seed=0)
    assert sorted(_ids(train) + _ids(val) + _ids(test)) == list(range(21))


def test_the_same_seed_gives_the_same_split_and_another_seed_does_not(digits_raw):
    raw = _indexed(digits_raw)
    a = split_data(raw, 0.15, 0.2, seed=7)
    b = split_data(raw, 0.15, 0.2, seed=7)
    c = split_data(raw, 0.15, 0.2, seed=8)
    assert [_ids(s) for s in a] == [_ids(s) for s in b]
    assert _ids(a[1]) != _ids(c[1]) and _ids(a[2]) != _ids(c[2])


def test_a_fixed_test_set_is_kept_as_is(digits_raw):
    pool = _indexed(RawData("d", TensorSource(digits_raw.data.x[:1000], digits_raw.data.y[:1000], 10))).data
    fixed = TensorSource(digits_raw.data.x[1000:1100].clone(), digits_raw.data.y[1000:1100].clone(), 10)
    raw = RawData("d", pool, fixed)
    train, val, test = split_data(raw, 0.25, 0.4, seed=0)  # test_fraction is unused
    assert test.source is fixed and torch.equal(test.indices, torch.arange(100))
    assert torch.equal(test.x, digits_raw.data.x[1000:1100]) and torch.equal(
        test.y, digits_raw.data.y[1000:1100]
    )
    assert len(val) == 250 and len(train) == 750
    assert sorted(_ids(train) + _ids(val)) == list(range(1000))


def test_a_fixed_test_set_of_another_image_shape_is_refused():
    raw = RawData("m", _good(30), TensorSource(torch.rand(4, 1, 5, 5), torch.zeros(4, dtype=torch.int64), 3))
    with pytest.raises(DataError, match=r"m: test samples are \(1, 5, 5\), training samples \(1, 4, 4\)"):
        split_data(raw, 0.2, 0.2, seed=0)


def test_split_data_checks_the_pool_and_the_test_set():
    bad = _good()
    bad.x[0, 0, 0, 0] = math.nan
    with pytest.raises(DataError, match=r"^pool data: images contain 1 NaN"):
        split_data(RawData("pool", bad), 0.2, 0.2, seed=0)
    bad_test = TensorSource(torch.rand(2, 1, 4, 4), torch.tensor([0, 5]), 3)
    with pytest.raises(DataError, match=r"^pool test: labels range over \[0, 5\]"):
        split_data(RawData("pool", _good(), bad_test), 0.2, 0.2, seed=0)


# --- Split ----------------------------------------------------------------------------------------


def test_split_len_shape_and_subset():
    s = Split.of(torch.rand(5, 3, 4, 6), torch.arange(5) % 2, 2)
    assert len(s) == 5 and s.input_shape == (3, 4, 6)
    sub = s.subset(2)
    assert len(sub) == 2 and torch.equal(sub.x, s.x[:2]) and sub.num_classes == 2


# --- check_source ---------------------------------------------------------------------------------


def test_a_good_source_is_returned_unchanged():
    s = _good()
    assert check_source(s, "train") is s


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (
            torch.rand(5, 4, 4),
            torch.zeros(5, dtype=torch.int64),
            r"^s: inputs have shape \(5, 4, 4\); expected \(N, C, H, W\) images or \(N, F\) table rows$",
        ),
        (
            torch.rand(5, 1, 1, 4, 4),
            torch.zeros(5, dtype=torch.int64),
            r"inputs have shape \(5, 1, 1, 4, 4\)",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.zeros(4, dtype=torch.int64),
            r"^s: labels have shape \(4,\) for 5 images; expected \(5,\)$",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.zeros(5, 1, dtype=torch.int64),
            r"^s: labels have shape \(5, 1\) and dtype torch.int64; expected \(N,\) int64$",
        ),
        (
            torch.rand(0, 1, 4, 4),
            torch.zeros(0, dtype=torch.int64),
            r"^s: no samples; expected at least one$",
        ),
        (
            torch.zeros(5, 1, 4, 4, dtype=torch.int32),
            torch.zeros(5, dtype=torch.int64),
            r"^s: images have dtype torch.int32; expected a floating dtype or uint8$",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.zeros(5, dtype=torch.int32),
            r"^s: labels have shape \(5,\) and dtype torch.int32; expected \(N,\) int64$",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.zeros(5),
            r"labels have shape \(5,\) and dtype torch.float32; expected \(N,\) int64",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.tensor([0, 1, 2, 3, 1]),
            r"^s: labels range over \[0, 3\]; expected 0 <= label < 3$",
        ),
        (
            torch.rand(5, 1, 4, 4),
            torch.tensor([0, -1, 2, 1, 1]),
            r"^s: labels range over \[-1, 2\]; expected 0 <= label < 3$",
        ),
    ],
    ids=[
        "3d",
        "5d",
        "count",
        "2d-labels",
        "empty",
        "int32-images",
        "int32-labels",
        "float-labels",
        "label-too-big",
        "label-negative",
    ],
)
def test_check_source_errors_name_the_source_and_the_problem(x, y, message):
    with pytest.raises(DataError, match=message):
        check_source(TensorSource(x, y, 3), "s")


def test_uint8_images_are_accepted_and_read_as_floats_in_the_unit_range():
    # MNIST and uint8 npz images are held as uint8; batches divide them by 255
    x = torch.tensor([0, 51, 255, 102], dtype=torch.uint8).reshape(4, 1, 1, 1)
    source = TensorSource(x, torch.arange(4) % 3, 3)
    assert check_source(source, "s") is source
    split = Split(source, torch.arange(4))
    assert split.x.dtype == torch.float32
    assert split.x.flatten().tolist() == pytest.approx([0.0, 0.2, 1.0, 0.4])


def test_nan_images_are_counted():
    x = torch.rand(5, 1, 4, 4)
    x[0, 0, 0, 0] = x[3, 0, 1, 2] = x[4, 0, 3, 3] = math.nan
    with pytest.raises(DataError, match=r"^train: images contain 3 NaN"):
        check_source(TensorSource(x, torch.zeros(5, dtype=torch.int64), 3), "train")


def test_infinite_images_are_refused():
    x = torch.rand(5, 1, 4, 4)
    x[1, 0, 0, 0] = math.inf
    with pytest.raises(DataError, match=r"^train: images contain .*non-finite values; expected none$"):
        check_source(TensorSource(x, torch.zeros(5, dtype=torch.int64), 3), "train")


def test_the_largest_valid_label_is_num_classes_minus_one():
    s = TensorSource(torch.rand(3, 1, 2, 2), torch.tensor([0, 9, 9]), 10)
    assert check_source(s, "s") is s
    with pytest.raises(DataError, match=r"expected 0 <= label < 9"):
        check_source(TensorSource(s.x, s.y, 9), "s")


def test_calibration_draws_the_configured_number_of_samples(digits_splits):
    train = digits_splits[0]
    sizes = [len(b) for b in calibration_batches(train, 3, 100)]
    assert sizes == [100, 100, 100]
    assert sum(len(b) for b in calibration_batches(train, 100, 500)) == len(train)  # capped at the data
    first, again = next(calibration_batches(train, 1, 50)), next(calibration_batches(train, 1, 50))
    assert torch.equal(first, again)  # the same samples in every run
