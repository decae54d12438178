"""Every built-in method, selected by name through the stage parameters, in a full `kedro run`.

Eight runs cover the 8 pruners, 4 distillers and 6 quantizers (each run combines one of each), with
short training so the whole file takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_kedro_run import FAST_EVAL, NO_GATE, STAGES, kedro, make_project, metrics

from shrinkflow import plugins
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import ModelSpec

SHORT = (
    "train_teacher.train.epochs=8,prune.finetune.epochs=2,distill.train.epochs=2,"
    "quantize.finetune.epochs=1," + FAST_EVAL + "," + NO_GATE
)
RECIPES = [
    ("agp", "soft_kd", "weight_sharing"),
    ("random", "hard_kd", "static_int8"),
    ("taylor", "feature_kd", "qat"),
    ("snip", "combined_kd", "half"),
    ("nm", "soft_kd", "binarize"),
    ("channel", "hard_kd", "dynamic_int8"),
    ("lowrank", "feature_kd", "static_int8"),
    ("magnitude", "combined_kd", "weight_sharing"),
]


#: quantizers that train (with quantize.finetune): one curve point per epoch
FINE_TUNED = {"qat", "weight_sharing", "binarize"}

#: methods for transformers only: their check refuses the default MLP; tests/test_kedro_text.py runs
#: heads and hidden_kd through the sst2 DAG, tests/test_plugins.py applies all three to a transformer
TRANSFORMER_ONLY = {"heads", "layer_drop", "hidden_kd"}


def test_the_recipes_cover_every_built_in_method():
    built_in = {
        family: {n for n in plugins.available(family) if plugins.info(family, n).distribution == "shrinkflow"}
        for family in (plugins.PRUNERS, plugins.DISTILLERS, plugins.QUANTIZERS)
    }
    assert {r[0] for r in RECIPES} == built_in[plugins.PRUNERS] - TRANSFORMER_ONLY
    assert {r[1] for r in RECIPES} == built_in[plugins.DISTILLERS] - TRANSFORMER_ONLY
    assert {r[2] for r in RECIPES} == built_in[plugins.QUANTIZERS] - TRANSFORMER_ONLY
    mlp = ModelArtifact.build(ModelSpec("mlp", {"hidden": [32]}), (1, 8, 8), 10).model
    refused = set()
    for family, names in built_in.items():
        for name in names:
            plugin = plugins.load(family, name)
            try:
                if plugin.check is not None:
                    plugin.check(mlp, plugin.config({}), (1, 8, 8))
            except ConfigError:
                refused.add(name)
    assert refused == TRANSFORMER_ONLY


@pytest.mark.parametrize(("pruner", "distiller", "quantizer"), RECIPES, ids=["-".join(r) for r in RECIPES])
def test_a_recipe_runs_end_to_end_and_its_artifacts_reload(tmp_path: Path, pruner, distiller, quantizer):
    project = make_project(tmp_path)
    params = f"prune.method={pruner},distill.method={distiller},quantize.method={quantizer},{SHORT}"
    result = kedro(project, "--params", params)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    document = metrics(project)
    assert [document[s]["method"] for s in STAGES[1:]] == [pruner, distiller, quantizer]
    assert document["teacher"]["accuracy"] >= 0.9
    # short training: baselines such as random pruning or SNIP from scratch may lose a lot, but
    # every stage must stay far above chance (0.1), and quantization must keep what it was given
    assert document["distilled"]["accuracy"] - document["quantized"]["accuracy"] <= 0.05
    for stage in STAGES:
        row = document[stage]
        assert row["status"] == "done" and row["accuracy"] >= 0.5, (stage, row["accuracy"])
        assert row["packed_bytes"] <= row["artifact_bytes"] * 1.05
    # every training stage leaves its per-epoch curve (DVC's plot file); post-training quantizers none
    history = project / "data/08_reporting/history"
    rows = {f.stem: pd.read_csv(f) for f in history.glob("*.csv")}
    assert len(rows["train_teacher"]) == 8 and len(rows["distill"]) == 2
    assert len(rows["prune"]) >= 2  # a gradual schedule fine-tunes after each of its steps
    assert len(rows["quantize"]) == (1 if quantizer in FINE_TUNED else 0)
    for table in rows.values():
        assert table["val_accuracy"].between(0, 1).all() and (table["lr"] >= 0).all()
        assert list(table["step"]) == list(range(1, len(table) + 1))
    # every artifact reloads in a new process and scores what was measured (the file is what ran)
    assert reloaded_accuracy(project) == {stage: document[stage]["accuracy"] for stage in STAGES}


_RELOAD = """
import json, sys
from pathlib import Path
from shrinkflow.core import artifact
from shrinkflow.core.datasets import digits
from shrinkflow.core.training import evaluate
from shrinkflow.stages import DataStage, split

test = split(digits(), DataStage(), seed=42)[2]
models = Path(sys.argv[1]) / "data/06_models"
print(json.dumps({s: evaluate(artifact.load(models / f"{s}.pt").model, test)[0] for s in sys.argv[2:]}))
"""


def reloaded_accuracy(project: Path) -> dict[str, float]:
    """Test accuracy of each stage's artifact, loaded in a fresh interpreter (``weights_only``)."""
    done = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(project), *STAGES], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
