"""`kedro run --env sst2` through the real CLI on SST-2-format files generated here."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.core.test_text import corpus, write_tsv
from tests.test_kedro_run import kedro, make_project

TINY = (
    "train_teacher.model.kwargs.transformer_encoder.d_model=32,"
    "train_teacher.model.kwargs.transformer_encoder.layers=1,"
    "train_teacher.model.kwargs.transformer_encoder.ffn=64,"
    "train_teacher.model.kwargs.transformer_encoder.vocab_size=300,"
    "train_teacher.train.epochs=4,train_teacher.train.batch_size=32,train_teacher.train.lr=0.003"
)


def test_the_sst2_environment_trains_a_transformer_teacher_on_the_dev_split(tmp_path: Path):
    data = tmp_path / "sst2"
    data.mkdir()
    write_tsv(data / "train.tsv", corpus(600, 0))
    write_tsv(data / "dev.tsv", corpus(80, 1))
    write_tsv(data / "test.tsv", corpus(100, 2))
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
