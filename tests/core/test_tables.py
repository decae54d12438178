"""Tables: the ``table`` plugin (CSV, Parquet), (N, F) arrays in ``npz``, and the standardization
that is fitted on the training split and stored in the model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from shrinkflow.core import artifact as art
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import (
    DataError,
    RawData,
    Split,
    TensorSource,
    check_channels,
    check_source,
    modality,
)
from shrinkflow.core.datasets import npz
from shrinkflow.core.models import ModelChoice, ModelSpec, build_model
from shrinkflow.core.tables import Standardize, Standardized, table
from shrinkflow.stages import DataStage, PruneStage, QuantizeStage, build, run_method, split


def _frame(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(20, 80, n),
            "income": rng.normal(50_000, 9_000, n),
            "score": rng.random(n),
            "target": np.arange(n) % 3,
        }
    )


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


# --- the table plugin -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_reads_features_and_labels_as_they_are(tmp_path, suffix):
    frame = _frame()
    raw = table(str(_write(frame, tmp_path / f"people{suffix}")), label="target")
    assert raw.name == "people" and raw.test is None
    assert raw.feature_names == ("age", "income", "score")
    assert raw.data.x.shape == (12, 3) and raw.data.x.dtype == torch.float32
    assert raw.data.num_classes == 3 and raw.data.y.tolist() == frame["target"].tolist()
    assert raw.data.x[:, 1].tolist() == pytest.approx(frame["income"].tolist(), rel=1e-6)  # not scaled
    assert check_source(raw.data, "t") is raw.data and modality(raw.data) == "table"


def test_table_chosen_features_class_names_and_a_test_table(tmp_path):
    frame = _frame().assign(kind=lambda f: np.where(f["target"] == 0, "red", "blue"))
    _write(frame, tmp_path / "train.csv")
    _write(frame.iloc[:4], tmp_path / "test.parquet")
    raw = table(
        str(tmp_path / "train.csv"),
        label="kind",
        features=["score", "age"],
        test_path=str(tmp_path / "test.parquet"),
    )
    assert raw.feature_names == ("score", "age") and raw.data.num_classes == 2
    assert raw.data.y.tolist() == [1 if k == "red" else 0 for k in frame["kind"]]  # sorted: blue, red
    assert raw.test.x.shape == (4, 2) and raw.test.y.tolist() == raw.data.y[:4].tolist()
    again = table(str(tmp_path / "train.csv"), label="target", features=["age"], read_args={"sep": ","})
    assert again.data.num_classes == 3 and again.data.x.shape == (12, 1)


def _bad(tmp_path: Path, kind: str) -> tuple[Path, dict]:
    frame, options = _frame(), {"label": "target"}
    if kind == "no-label":
        frame = frame.drop(columns="target")
    elif kind == "text":
        frame["income"] = frame["income"].astype(object)
        frame.loc[4, "income"] = "unknown"  # (pandas reads "n/a", "NA", "" as missing: the NaN case)
    elif kind == "nan":
        frame.loc[[2, 7], "score"] = math.nan
    elif kind == "unknown-feature":
        options["features"] = ["age", "height"]
    elif kind == "fractional-label":
        frame["target"] = frame["target"] + 0.5
    elif kind == "format":
        return _write(frame, tmp_path / "t.csv").rename(tmp_path / "t.xlsx"), options
    return _write(frame, tmp_path / "t.csv"), options


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("no-label", "has columns ['age', 'income', 'score']; expected the label column 'target'"),
        ("text", "feature column 'income' holds non-numeric values ('unknown' in row 4); expected numbers"),
        ("nan", "feature column 'score' has 2 missing (NaN) values, e.g. in rows [2, 7]; expected a number"),
        ("unknown-feature", "feature columns ['height'] are not in the table"),
        ("fractional-label", "label 0.5 in row 0 is not a class; expected integer class indices"),
        ("format", "format '.xlsx' is unknown; expected format: csv | parquet"),
    ],
)
def test_table_bad_input_names_the_file_the_value_and_what_was_expected(tmp_path, kind, text):
    path, options = _bad(tmp_path, kind)
    with pytest.raises(DataError) as err:
        table(str(path), **options)
    assert text in str(err.value) and str(path) in str(err.value), str(err.value)


def test_table_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match=r"table '.*none\.csv' does not exist"):
        table(str(tmp_path / "none.csv"))
    (tmp_path / "cut.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"cut\.parquet' cannot be read as parquet: "):
        table(str(tmp_path / "cut.parquet"))


# --- npz with (N, F) rows ---------------------------------------------------------------------


def test_npz_reads_table_rows_unscaled_with_their_column_names(tmp_path):
    x = np.array([[1.0, 250.0], [2.0, -3.5], [0.5, 1e4]], np.float64)
    np.savez(tmp_path / "t.npz", x=x, y=np.array([0, 1, 1]), feature_names=np.array(["a", "b"]))
    raw = npz(str(tmp_path / "t.npz"))
    assert raw.data.x.shape == (3, 2) and Split(raw.data, torch.arange(3)).input_shape == (2,)
    assert raw.data.x.tolist() == [[1.0, 250.0], [2.0, -3.5], [0.5, 10000.0]]
    assert raw.feature_names == ("a", "b") and raw.data.num_classes == 2
    np.savez(tmp_path / "t.npz", x=x, y=np.array([0, 1, 1]), feature_names=np.array(["a"]))
    with pytest.raises(DataError, match=r"feature_names has shape \(1,\).*expected 2 strings"):
        npz(str(tmp_path / "t.npz"))
    np.savez(tmp_path / "t.npz", x=x.astype(bool), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match=r"x: features have dtype bool; expected numbers"):
        npz(str(tmp_path / "t.npz"))


def test_channels_are_refused_for_table_rows():
    rows = Split.of(torch.rand(4, 5), torch.zeros(4, dtype=torch.int64), 2)
    check_channels(None, rows.input_shape)  # null: rows as they are
    raw = RawData("rows", TensorSource(torch.rand(40, 5), torch.arange(40) % 2, 2))
    train, val, test = split(raw, DataStage(), seed=0)
    assert train.input_shape == val.input_shape == test.input_shape == (5,)
    assert torch.equal(train.x, raw.data.x[train.indices])
    message = r"^data\.channels=3 is invalid: expected null for table rows of shape \(N, 5\)"
    with pytest.raises(ConfigError, match=message):
        check_channels(3, rows.input_shape)
    with pytest.raises(ConfigError, match=message):
        split(raw, DataStage(channels=3), seed=0)


# --- standardization: fitted on train, stored with the model ----------------------------------


def _breast_cancer() -> RawData:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x, y = torch.tensor(bunch.data, dtype=torch.float32), torch.tensor(bunch.target)
    return RawData("breast_cancer", TensorSource(x, y, 2), feature_names=tuple(bunch.feature_names))


def test_the_stored_statistics_are_the_training_splits_not_the_whole_sets():
    raw = _breast_cancer()
    train, _, _ = split(raw, DataStage(), seed=0)
    artifact = build(ModelChoice("mlp", {"mlp": {"hidden": [16]}}), train)
    assert artifact.spec.standardize and isinstance(artifact.model, Standardized)
    stored = artifact.model.standardize
    assert torch.allclose(stored.mean, train.x.double().mean(0).float())
    assert torch.allclose(stored.std, train.x.double().std(0, unbiased=False).float())
    assert not torch.allclose(stored.mean, raw.data.x.double().mean(0).float())
    # the mean area (feature 3) of the train rows, about 650: not the 654.89 of all 569 rows
    assert abs(float(stored.mean[3]) - float(raw.data.x[:, 3].mean())) > 0.01
    # the model takes raw features: its first Linear sees standardized ones
    seen = {}
    artifact.model.model[1].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    artifact.model(train.x)
    assert seen["x"].mean(0).abs().max() < 1e-4 and (seen["x"].std(0, unbiased=False) - 1).abs().max() < 1e-3


def test_auto_standardizes_tables_only_and_false_turns_it_off():
    rows, images = (8,), (1, 4, 4)
    assert ModelChoice().spec_for(rows).standardize and not ModelChoice().spec_for(images).standardize
    assert not ModelChoice(standardize=False).spec_for(rows).standardize
    assert ModelChoice(standardize=True).spec_for(images).standardize
    assert ModelSpec("mlp").to_dict() == {"name": "mlp", "kwargs": {}}  # image specs as before
    assert ModelSpec("mlp", standardize=True).to_dict()["standardize"] is True
    with pytest.raises(ConfigError, match=r"^standardize='yes' is invalid: expected auto"):
        ModelChoice(standardize="yes")
    assert type(build_model(ModelSpec("mlp"), rows, 3)).__name__ == "MLP"


def test_a_constant_feature_keeps_std_one():
    module = Standardize((3,)).fit(torch.tensor([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0]]))
    assert module.mean.tolist() == [2.0, 5.0, 1.0] and module.std.tolist() == [1.0, 1.0, 1.0]


def test_mlp_takes_table_rows():
    model = build_model(ModelSpec("mlp", {"hidden": [7]}), (30,), 2)
    assert model(torch.zeros(5, 30)).shape == (5, 2) and model[1].in_features == 30


def test_pruning_and_static_int8_leave_the_statistics_and_the_artifact_reloads_identically():
    raw = _breast_cancer()
    train, val, test = split(raw, DataStage(), seed=0)
    torch.manual_seed(0)
    teacher = build(ModelChoice("mlp", {"mlp": {"hidden": [32]}}), train)
    pruned, _ = run_method(
        PruneStage(method="channel", options={"channel": {"ratio": 0.5}}), teacher, train, val
    )
    quantized, _ = run_method(QuantizeStage(method="static_int8"), pruned, train, val)
    for model in (pruned.model, quantized.model):
        assert torch.equal(model.standardize.mean, teacher.model.standardize.mean)
    assert pruned.model.model[1].out_features == 16 and pruned.model.model[1].in_features == 30
    # int8 starts after the standardization: the raw features (areas ~650, smoothness ~0.1) stay float
    # (torch FX: operator.truediv, torch.quantize_per_tensor; PT2E: aten.div, quantized_decomposed...)
    order = [str(node.target) for node in quantized.model.graph.nodes]
    first = lambda word: next(i for i, target in enumerate(order) if word in target)  # noqa: E731
    assert first("div") < first("quantize_per_tensor")
    again = art.from_bytes(art.to_bytes(quantized))
    assert torch.equal(again.model(test.x), quantized.model(test.x))
