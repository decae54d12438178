"""The artifact format: safe loading, exact reloads, atomic writes, clear errors."""

from __future__ import annotations

import os

import pytest
import torch

from shrinkflow.core import artifact
from shrinkflow.core.artifact import ArtifactError, ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, seed_everything
from shrinkflow.stages import PruneStage, QuantizeStage, run_method


@pytest.fixture
def mlp() -> ModelArtifact:
    seed_everything(0)
    return ModelArtifact.build(ModelSpec("mlp", {"hidden": [64]}), (1, 8, 8), 10)


@pytest.fixture
def data() -> Split:
    return Split(torch.rand(32, 1, 8, 8), torch.arange(32) % 10, 10)


def _chain(mlp: ModelArtifact, data: Split) -> list[ModelArtifact]:
    pruned, _ = run_method(
        PruneStage(method="magnitude", options={"magnitude": {"sparsity": 0.8}}),
        mlp,
        data,
        data,
        train_cfg=TrainConfig(epochs=1),
    )
    quantized, _ = run_method(QuantizeStage(method="dynamic_int8"), pruned, data, data)
    return [mlp, pruned, quantized]


def test_every_kind_of_artifact_reloads_with_identical_predictions(mlp, data, tmp_path):
    for i, art in enumerate(_chain(mlp, data)):
        path = tmp_path / f"{i}.pt"
        artifact.save(art, path)
        assert path.stat().st_size == len(artifact.to_bytes(art))
        torch.load(path, weights_only=True)  # plain safe load works: nothing but tensors and primitives
        loaded = artifact.load(path)
        with torch.inference_mode():
            assert torch.equal(loaded.model(data.x), art.model.eval()(data.x))
        assert loaded.recipe == art.recipe and loaded.spec == art.spec


def test_quantized_artifact_is_about_four_times_smaller(data):
    big = ModelArtifact.build(ModelSpec("mlp", {"hidden": [256, 256]}), (1, 8, 8), 10)
    sizes = [len(artifact.to_bytes(a)) for a in _chain(big, data)]
    assert 3.5 < sizes[0] / sizes[2] < 4.0  # int8 weights; fp32 biases and scales keep it under 4


def test_missing_truncated_and_foreign_files_fail_clearly(mlp, tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        artifact.load(tmp_path / "nope.pt")
    path = tmp_path / "m.pt"
    artifact.save(mlp, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ArtifactError, match="cannot be read safely"):
        artifact.load(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ArtifactError, match="not a shrinkflow model artifact"):
        artifact.load(path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "shrinkflow.model", "payload": _Evil()}, path)
    with pytest.raises(ArtifactError, match="weights_only=True"):
        artifact.load(path)


def test_incompatible_state_dict_lists_the_mismatch(mlp):
    other = ModelArtifact.build(ModelSpec("mlp", {"hidden": [16]}), (1, 8, 8), 10)
    with pytest.raises(
        ArtifactError, match=r"shape mismatches \['1.weight: file \(16, 64\) vs model \(64, 64\)'"
    ):
        artifact.load_state_dict(mlp.model, other.model.state_dict(), "other.pt")


def test_a_failed_save_keeps_the_previous_file(mlp, tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    artifact.save(mlp, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(artifact.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        artifact.save(mlp, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
