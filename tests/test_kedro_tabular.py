"""`kedro run` on a table: scikit-learn's breast-cancer set (569 rows x 30 features, 2 classes)
as an ``npz`` of (N, F) rows, with nothing configured but its catalog entry and the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_kedro_run import FAST_EVAL, kedro, make_project, metrics

from shrinkflow.core import artifact as art
from shrinkflow.core.training import evaluate
from shrinkflow.io.datasets import SplitDataset

CATALOG = """\
raw_data:
  type: shrinkflow.io.PluginDataset
  plugin: npz
  options: {{path: {path}}}
  validator: {{class: shrinkflow.validation.SuiteValidator, on: [load], options: {{suite: raw_data}}}}
"""


def breast_cancer_npz(path: Path) -> Path:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    np.savez(
        path,
        x=bunch.data.astype(np.float32),
        y=bunch.target.astype(np.int64),
        feature_names=np.array(bunch.feature_names, dtype=str),
    )
    return path


@pytest.mark.slow
def test_a_table_runs_the_whole_dag_and_the_final_model_keeps_the_teacher_accuracy(tmp_path: Path):
    project = make_project(tmp_path / "project")
    data = breast_cancer_npz(tmp_path / "breast_cancer.npz")
    (project / "conf/tabular").mkdir()
    (project / "conf/tabular/catalog.yml").write_text(CATALOG.format(path=data))
    result = kedro(project, "--env", "tabular", "--params", f"{FAST_EVAL},train_teacher.model.name=mlp")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    validations = project / "data/gx/gx/uncommitted/validations"
    assert (validations / "raw_data_table").is_dir() and not (validations / "raw_data").exists()

    document = metrics(project)
    teacher, final = document["teacher"], document["quantized"]
    assert all(document[s]["status"] == "done" for s in ("teacher", "pruned", "distilled", "quantized"))
    assert teacher["accuracy"] >= 0.94
    assert teacher["accuracy"] - final["accuracy"] <= 0.01
    assert document["onnx"]["agreement"] >= 0.99

    # the statistics are the training split's, stored in every model, applied to raw features
    train = SplitDataset(str(project / "data/05_model_input/train.pt")).load()
    test = SplitDataset(str(project / "data/05_model_input/test.pt")).load()
    assert train.input_shape == (30,) and len(train) + len(test) < 569
    quantized = art.load(project / "data/06_models/quantized.pt")
    assert quantized.spec.standardize and quantized.input_shape == (30,)
    mean = quantized.model.standardize.mean
    assert torch.allclose(mean, train.x.double().mean(0).float(), rtol=1e-5)
    assert evaluate(quantized.model, test)[0] == pytest.approx(final["accuracy"])
