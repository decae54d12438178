"""The suites of conf/base/gx_suites.yml run by real Great Expectations in a file context."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from shrinkflow.core.data import RawData, TensorSource
from shrinkflow.core.datasets import digits
from shrinkflow.validation import GateFailure, SuiteConfigError, SuiteValidator, Validation, configure
from shrinkflow.validation.frames import quality_table
from shrinkflow.validation.suites import KEEP_RESULTS

ROOT = Path(__file__).resolve().parents[2]
SUITES = yaml.safe_load((ROOT / "conf/base/gx_suites.yml").read_text())
GATES = {
    "max_accuracy_drop": 0.02,
    "final": "quantized",
    "min_compression_ratio": 5.0,
    "max_packed_bytes": None,
    "min_sparsity": 0.5,
}


def _validation(tmp_path: Path, suites=SUITES, gates=GATES) -> Validation:
    return Validation(tmp_path, suites, {"gates": dict(gates)})


def _metrics(drop: float = 0.003, packed: int = 30_000, sparsity: float = 0.7) -> pd.DataFrame:
    m = lambda acc, p, s: {"accuracy": acc, "packed_bytes": p, "sparsity": s}  # noqa: E731
    return quality_table(
        {
            "teacher": m(0.98, 340_000, 0.0),
            "pruned": m(0.975, 110_000, sparsity),
            "quantized": m(0.98 - drop, packed, sparsity),
        },
        final="quantized",
    )


def test_digits_passes_the_raw_data_suite(tmp_path):
    result, frame = _validation(tmp_path).check("raw_data", digits(), "raw_data")
    assert (
        result.success and result.evaluated == len(SUITES["raw_data"]["expectations"]) and not result.failures
    )
    assert len(frame) == 1797


def _broken(kind: str) -> RawData:
    raw = digits()
    x, y = raw.data.x.clone(), raw.data.y.clone()
    if kind == "nan":
        x[5, 0, 3, 3] = float("nan")
        x[9, 0, 0, 0] = float("nan")
    elif kind == "labels":
        y[7] = 12
    elif kind == "range":
        x[3] *= 255.0
    elif kind == "empty":
        x, y = x[:0], y[:0]
    elif kind == "imbalanced":
        keep = (y != 3) | (torch.arange(len(y)) % 10 == 0)  # class 3 down to a tenth
        x, y = x[keep], y[keep]
    return RawData("digits", TensorSource(x, y, 10))


@pytest.mark.parametrize(
    ("kind", "column", "expected", "observed"),
    [
        ("nan", "nan_count", "max_value=0", "2 unexpected values, e.g. [1, 1]"),
        ("labels", "column_B", "column_A='num_classes'", "1 unexpected value"),
        ("range", "max", "max_value=1.0", "1 unexpected value"),
        ("empty", None, "min_value=100", "observed 0"),
        ("imbalanced", "class_balance", "min_value=0.5", "unexpected values, e.g. [0.1"),
    ],
)
def test_a_bad_data_set_fails_naming_the_expectation_the_expected_and_the_observed(
    tmp_path, kind, column, expected, observed
):
    with pytest.raises(GateFailure) as err:
        _validation(tmp_path).check("raw_data", _broken(kind), "raw_data")
    text = str(err.value)
    assert "raw_data: " in text and "expectations failed" in text and expected in text and observed in text, (
        text
    )
    if column:
        assert f"  - {column}: " in text or "column_B" in text, text


def test_labels_out_of_range_name_the_label(tmp_path):
    with pytest.raises(GateFailure) as err:
        _validation(tmp_path).check("raw_data", _broken("labels"), "raw_data")
    failure = next(f for f in err.value.result.failures if "pair" in f.expectation)
    assert failure.examples == [[10, 12]] or "12" in str(failure.observed), failure


def test_the_quality_gate_names_the_stage_the_observed_drop_and_the_budget(tmp_path):
    validation = _validation(tmp_path, gates={**GATES, "max_accuracy_drop": 0.01})
    with pytest.raises(GateFailure) as err:
        validation.check("quality_gates", _metrics(drop=0.015), "quality_gates")
    text = str(err.value)
    assert "accuracy_drop: expect_column_values_to_be_between(max_value=0.01)" in text, text
    assert "e.g. [0.015] at quantized" in text, text


def test_final_size_and_sparsity_targets_apply_to_the_final_row_only(tmp_path):
    validation = _validation(
        tmp_path, gates={**GATES, "min_compression_ratio": 20.0, "max_packed_bytes": 20_000}
    )
    with pytest.raises(GateFailure) as err:
        validation.check("quality_gates", _metrics(packed=30_000), "quality_gates")
    failures = {f.column: f for f in err.value.result.failures}
    assert set(failures) == {"packed_compression_ratio", "packed_bytes"}
    assert failures["packed_bytes"].labels == ["quantized"] and failures["packed_bytes"].examples == [30000]
    assert "where='final == True'" in str(err.value)


def test_unset_bounds_switch_their_expectation_off(tmp_path):
    gates = {**GATES, "min_compression_ratio": None, "min_sparsity": None}
    result, _ = _validation(tmp_path, gates=gates).check(
        "quality_gates", _metrics(packed=200_000, sparsity=0.0), "q"
    )
    assert result.success and result.evaluated == 1 and len(result.skipped) == 3


def test_warn_logs_and_the_validator_marks_the_failing_rows(tmp_path, caplog):
    suites = {**SUITES, "quality_gates": {**SUITES["quality_gates"], "on_failure": "warn"}}
    configure(_validation(tmp_path, suites=suites, gates={**GATES, "max_accuracy_drop": 0.001}))
    try:
        marked = SuiteValidator("quality_gates").validate(_metrics(drop=0.003))
    finally:
        configure(None)
    assert marked["failed_checks"].tolist()[0] == ""
    assert all(
        "accuracy_drop: expect_column_values_to_be_between(max_value=0.001)" in c
        for c in marked["failed_checks"].tolist()[1:]
    )
    assert "on_failure: warn, the run goes on" in caplog.text


def test_data_docs_render_the_last_results_as_html(tmp_path):
    validation = _validation(tmp_path)
    validation.check("raw_data", digits(), "raw_data")
    validation.check("quality_gates", _metrics(), "quality_gates")
    index = validation.build_docs()
    assert index == tmp_path / "data/08_reporting/data_docs/index.html"
    html = index.read_text()
    assert "raw_data" in html and "quality_gates" in html
    pages = list((index.parent / "validations").rglob("*.html"))
    assert len(pages) == 2 and any("accuracy_drop" in p.read_text() for p in pages)


def test_old_results_are_pruned(tmp_path):
    validation = _validation(tmp_path)
    for _ in range(KEEP_RESULTS + 2):
        validation.check("quality_gates", _metrics(), "q")
    stored = list((tmp_path / "data/gx/gx/uncommitted/validations/quality_gates").rglob("*.json"))
    assert len(stored) == KEEP_RESULTS
    assert json.loads(stored[0].read_text())["success"] is True


@pytest.mark.parametrize(
    ("suites", "text"),
    [
        ({"s": {"frame": "pixels", "expectations": [{"type": "x"}]}}, "gx_suites.s.frame='pixels'"),
        ({"s": {"on_failure": "ignore", "expectations": [{"type": "x"}]}}, "on_failure='ignore'"),
        ({"s": {"expectations": []}}, "gx_suites.s.expectations: expected a non-empty list"),
        ({"s": {"expectations": [{"kind": "x"}]}}, "expectations[0]: expected {type"),
        ({"s": {"expectation": [{"type": "x"}]}}, "unknown keys ['expectation']"),
        (
            {"s": {"variants": {"audio": "s"}, "expectations": [{"type": "x"}]}},
            "gx_suites.s.variants={'audio': 's'}: expected a mapping {modality: suite}",
        ),
        (
            {"s": {"variants": {"table": "t"}, "expectations": [{"type": "x"}]}},
            "gx_suites.s.variants.table='t': expected a declared suite",
        ),
    ],
)
def test_malformed_suites_are_refused_naming_the_key(tmp_path, suites, text):
    with pytest.raises(SuiteConfigError) as err:
        Validation(tmp_path, suites, {})
    assert text in str(err.value)


def test_an_unknown_expectation_or_parameter_is_named(tmp_path):
    frame = pd.DataFrame({"a": [1]})
    bad_type = Validation(
        tmp_path,
        {"s": {"expectations": [{"type": "expect_column_to_be_nice", "kwargs": {"column": "a"}}]}},
        {},
    )
    with pytest.raises(SuiteConfigError, match=r"gx_suites.s.expectations\[0\] \(expect_column_to_be_nice\)"):
        bad_type.check("s", frame, "s")
    item = {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": "a", "max_value": {"$PARAMETER": "gates.nope"}},
    }
    with pytest.raises(SuiteConfigError, match=r"parameter 'gates\.nope' is not set"):
        Validation(tmp_path, {"s": {"expectations": [item]}}, {"gates": {}}).check("s", frame, "s")
    with pytest.raises(
        SuiteConfigError, match=r"suite 'other' is not declared in gx_suites.yml; declared: \['s'\]"
    ):
        bad_type.check("other", frame, "s")


# --- tables: the raw_data suite hands (N, F) rows to raw_data_table -------------------------------


def _breast_cancer(**changes: float) -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    for cell, value in changes.items():
        row, column = (int(i) for i in cell.split("_")[1:])
        x[row, column] = value
    return RawData(
        "bc", TensorSource(x, torch.tensor(bunch.target), 2), feature_names=tuple(bunch.feature_names)
    )


def test_a_table_outside_the_unit_range_passes_raw_data_with_the_table_checks(tmp_path):
    raw = _breast_cancer()
    assert float(raw.data.x.max()) > 4000 and float(raw.data.x.min()) == 0.0  # worst area: 4254
    validation = _validation(tmp_path)
    result, frame = validation.check("raw_data", raw, "raw_data")
    assert result.success and result.suite == "raw_data_table"
    assert result.evaluated == len(SUITES["raw_data_table"]["expectations"])
    assert len(frame) == 30 and frame["column"].iloc[3] == "data.mean area"
    assert validation.resolve("raw_data", digits()).name == "raw_data"  # images keep the pixel checks


def test_a_table_with_inf_fails_naming_the_column(tmp_path):
    with pytest.raises(GateFailure) as err:
        _validation(tmp_path).check("raw_data", _breast_cancer(x_7_3=float("inf")), "raw_data")
    text = str(err.value)
    assert "raw_data (raw_data_table: table data): 1 of 7 expectations failed" in text, text
    assert "inf_count: expect_column_values_to_be_between(max_value=0" in text and "at data.mean area" in text
    failure = err.value.result.failures[0]
    assert failure.labels == ["data.mean area"] and failure.examples == [1]


def test_a_table_with_a_rare_class_fails_the_balance_check(tmp_path):
    raw = _breast_cancer()
    keep = (raw.data.y == 1) | (torch.arange(len(raw.data)) % 5 == 0)  # 212 malignant down to about 42
    rare = RawData("bc", TensorSource(raw.data.x[keep], raw.data.y[keep], 2), feature_names=raw.feature_names)
    with pytest.raises(GateFailure) as err:
        _validation(tmp_path).check("raw_data", rare, "raw_data")
    assert "class_balance_min: expect_column_values_to_be_between(min_value=0.25)" in str(err.value)


# --- image folders: sizes are read per image, so mixed sizes fail here before any batch ------------


def test_an_image_folder_of_mixed_sizes_fails_the_height_and_width_checks(tmp_path):
    import numpy as np
    from PIL import Image

    from shrinkflow.core.datasets import image_folder

    root = tmp_path / "images"
    for label, sides in {"a": [8] * 60, "b": [8] * 59 + [9]}.items():
        (root / label).mkdir(parents=True)
        for i, side in enumerate(sides):
            Image.fromarray(np.full((side, side), 40 + i, np.uint8), "L").save(root / label / f"{i}.png")
    with pytest.raises(GateFailure) as err:
        _validation(tmp_path).check("raw_data", image_folder(str(root)), "raw_data")
    failures = {f.column: f for f in err.value.result.failures}
    assert set(failures) == {"height", "width"}, str(err.value)
    assert "expect_column_unique_value_count_to_be_between(min_value=1, max_value=1)" in str(err.value)
    assert "observed 2" in str(err.value), str(err.value)
