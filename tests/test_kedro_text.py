"""`kedro run --env sst2` through the real CLI on SST-2-format files generated here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from shrinkflow.stages import MODELS
from tests.core.test_text import corpus, write_tsv
from tests.test_kedro_run import kedro, make_project

TINY = (
    "train_teacher.model.kwargs.transformer_encoder.d_model=32,"
    "train_teacher.model.kwargs.transformer_encoder.layers=1,"
    "train_teacher.model.kwargs.transformer_encoder.ffn=64,"
    "train_teacher.model.kwargs.transformer_encoder.vocab_size=300,"
    "train_teacher.train.epochs=4,train_teacher.train.batch_size=32,train_teacher.train.lr=0.003"
)


def _sst2_files(data: Path) -> Path:
    """SST-2-format train/dev/test files of the generated corpus (600 / 80 / 100 sentences)."""
    data.mkdir()
    write_tsv(data / "train.tsv", corpus(600, 0))
    write_tsv(data / "dev.tsv", corpus(80, 1))
    write_tsv(data / "test.tsv", corpus(100, 2))
    return data


def test_the_sst2_environment_trains_a_transformer_teacher_on_the_dev_split(tmp_path: Path):
    data = _sst2_files(tmp_path / "sst2")
    project = make_project(tmp_path / "project")
    # the catalog's tokenizer of 8,000 tokens learns what these 12 words give (vocab_size caps it)
    result = kedro(
        project, "--env", "sst2", "--pipelines", "data,train_teacher", "--params", f"sst2_dir={data},{TINY}"
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    tokenizer = json.loads((project / "data/04_feature/tokenizer.json").read_text())
    assert tokenizer["options"]["kind"] == "wordpiece"
    record = json.loads((project / "data/07_model_output/train_teacher_record.json").read_text())
    assert record["history"][-1]["val_accuracy"] >= 0.9  # the mood word decides the label
    model = torch.load(project / "data/06_models/teacher.pt", weights_only=True)
    assert isinstance(model, dict)
    # the MLflow run keeps the tokenizer the ids come from
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("shrinkflow").experiment_id])
    logged = Path(client.download_artifacts(run.info.run_id, "tokenizer/tokenizer.json", str(tmp_path)))
    text = (project / "data/04_feature/tokenizer.json").read_text()
    assert json.loads(json.loads(text)["tokenizer"]) == json.loads(logged.read_text())
    assert run.data.tags["data.tokenizer_sha256"] == hashlib.sha256(logged.read_bytes()).hexdigest()


STUDENT = "distill.student.kwargs.transformer_encoder"
WHOLE_DAG = ",".join(
    [
        TINY.replace("layers=1", "layers=2"),
        f"{STUDENT}.d_model=32,{STUDENT}.layers=1,{STUDENT}.ffn=64,{STUDENT}.vocab_size=300",
        "distill.train.epochs=3,distill.train.batch_size=32,distill.train.lr=0.003",
        "prune.finetune.epochs=1,prune.finetune.batch_size=32",
        "evaluate.latency_runs=5,evaluate.throughput_runs=2,evaluate.throughput_batch=8",
        "gates.max_accuracy_drop=0.2",
    ]
)


@pytest.mark.slow
def test_the_whole_dag_prunes_heads_distils_fewer_layers_and_serves_int8_token_ids(tmp_path: Path):
    data = _sst2_files(tmp_path / "sst2")
    project = make_project(tmp_path / "project")
    result = kedro(project, "--env", "sst2", "--params", f"sst2_dir={data},{WHOLE_DAG}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = project / "data/07_model_output"
    metrics = {m: json.loads((out / f"{m}_metrics.json").read_text()) for m in MODELS}
    teacher, pruned, distilled, quantized = (metrics[m] for m in MODELS)
    # heads: half the heads and FFN neurons of the 2 layers go, for real
    assert pruned["params_total"] < teacher["params_total"] and pruned["sparsity"] < 0.01  # [PAD] row: 0
    assert pruned["macs_len128"] < teacher["macs_len128"]
    assert distilled["macs_len32"] < 0.6 * teacher["macs_len32"]  # one layer of two
    for m in metrics.values():
        assert m["accuracy"] >= 0.85  # the mood word decides the label
        assert m["latency_b1_len32_p50_ms"] > 0 and m["latency_b1_len128_p50_ms"] > 0
        assert m["macs_len128"] > 4 * m["macs_len32"]
    assert abs(quantized["accuracy"] - distilled["accuracy"]) <= 0.02
    record = json.loads((project / "data/07_model_output/prune_record.json").read_text())
    assert record["method"] == "heads"
    onnx = json.loads((out / "onnx_metrics.json").read_text())  # the exported file in ONNX Runtime
    assert onnx["agreement"] >= 0.99 and onnx["latency_b1_len128_p50_ms"] > 0
    deployment = json.loads((project / "data/08_reporting/deployment.json").read_text())
    assert deployment["runtime"] in {row["runtime"] for row in deployment["candidates"]}
