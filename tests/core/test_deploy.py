"""Deployment: every runtime measured beside the teacher, the fastest agreeing one served."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core import openvino
from shrinkflow.core.artifact import ModelArtifact, from_bytes
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import calibration_batches
from shrinkflow.core.deploy import deploy, load_deployed
from shrinkflow.core.export import ExportConfig, ExportError
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, seed_everything
from shrinkflow.io import DeployedModelDataset
from shrinkflow.stages import PruneStage, QuantizeStage, run_method

FAST = MeasureConfig(warmup=2, latency_runs=20, throughput_runs=3)


@pytest.fixture(scope="module")
def models(digits_splits) -> dict[str, ModelArtifact]:
    train, val, _ = digits_splits
    seed_everything(0)
    teacher = ModelArtifact.build(
        ModelSpec("mlp", {"hidden": [128, 64]}), train.input_shape, train.num_classes
    )
    fit(teacher.model, train, TrainConfig(epochs=8, lr=3e-3))
    stage = PruneStage(
        method="magnitude", options={"magnitude": {"sparsity": 0.9}}, finetune=TrainConfig(epochs=2)
    )
    pruned = run_method(stage, teacher, train, val, train_cfg=stage.finetune)[0]
    quantized = run_method(QuantizeStage(method="dynamic_int8"), pruned, train, val, teacher=teacher)[0]
    return {"teacher": teacher, "pruned": pruned, "quantized": quantized}


def _deploy(models, splits, stage: str, **options):
    train, val, test = splits
    calibration = list(calibration_batches(train, 2, 128))
    return deploy(
        models[stage], models["teacher"], val, test, calibration, ExportConfig(rounds=2, **options), FAST
    )


def test_every_runtime_is_measured_and_the_fastest_agreeing_one_is_chosen_per_batch(models, digits_splits):
    found = _deploy(models, digits_splits, "pruned", min_agreement=1.0)
    rows = found.rows
    builtin = {"eager", "sparse_csr", "onnx_fp32", "onnx_int8"}
    why = (
        openvino.unavailable()
    )  # the optional extra: measured where installed, skipped (saying why) elsewhere
    assert {r["runtime"] for r in rows} == builtin | ({"openvino_int8"} if why is None else set())
    assert {r["batch"] for r in rows} == {1, 256} and found.skipped == (
        {} if why is None else {"openvino_int8": why}
    )
    for batch in (1, 256):
        here = [r for r in rows if r["batch"] == batch]
        for r in here:
            assert r["eligible"] == (r["val_agreement"] >= 1.0)  # selection reads validation only
            assert r["throughput_sps"] == pytest.approx(batch / (r["latency_ms"] / 1e3))
            assert r["speedup"] > 0 and 0.0 <= r["test_accuracy"] <= 1.0
        fastest = max((r for r in here if r["eligible"]), key=lambda r: r["speedup"])
        assert found.chosen[batch] == fastest["runtime"]
        assert [r["runtime"] for r in here if r["chosen"]] == [fastest["runtime"]]
    # the float runtimes compute the pruned model's function: they agree on every input
    for r in rows:
        if r["runtime"] in ("eager", "sparse_csr", "onnx_fp32"):
            assert r["val_agreement"] == 1.0 and r["test_agreement"] == 1.0
    assert found.runtime == found.chosen[1]
    summary = found.to_dict()
    assert summary["selection_split"] == "validation" and summary["chosen"] == {
        "1": found.chosen[1],
        "256": found.chosen[256],
    }


def test_the_deployed_folder_reloads_to_the_served_predictions(models, digits_splits, tmp_path):
    _, _, test = digits_splits
    x = test.x[:64]
    for fmt, suffix in (("sparse_csr", ".pt"), ("int8", ".onnx")):
        found = _deploy(models, digits_splits, "pruned", format=fmt)
        folder = tmp_path / "deployed"
        dataset = DeployedModelDataset(str(folder))
        dataset.save(
            {"data": found.served.data, "manifest": {"runtime": found.runtime, "suffix": found.served.suffix}}
        )
        assert sorted(p.name for p in folder.iterdir()) == [
            "deployment.json",
            f"model{suffix}",
        ]  # the other suffix is gone
        served = load_deployed(folder)
        assert torch.equal(served(x).argmax(1), found.served.runner(x).argmax(1))
        assert dataset.load()["manifest"]["runtime"] == {"sparse_csr": "sparse_csr", "int8": "onnx_int8"}[fmt]


def test_without_the_openvino_extra_its_runtime_is_skipped_saying_how_to_install_it(
    models, digits_splits, monkeypatch
):
    monkeypatch.setattr(
        openvino, "unavailable", lambda: "nncf does not import; pip install 'shrinkflow[openvino]'"
    )
    found = _deploy(models, digits_splits, "pruned", runtimes=["onnx_fp32", "openvino_int8"], batch_sizes=[1])
    assert found.skipped == {"openvino_int8": "nncf does not import; pip install 'shrinkflow[openvino]'"}
    assert [r["runtime"] for r in found.rows] == ["onnx_fp32"] and found.runtime == "onnx_fp32"


def test_openvino_int8_is_measured_like_the_others_and_its_folder_reloads(models, digits_splits, tmp_path):
    if openvino.unavailable():  # the optional extra is not installed (or its wheel does not import)
        pytest.skip(openvino.unavailable())
    _, _, test = digits_splits
    found = _deploy(models, digits_splits, "pruned", runtimes=["openvino_int8"], min_agreement=0.9)
    (row, *_) = [r for r in found.rows if r["batch"] == 1]
    assert row["runtime"] == "openvino_int8" and row["val_agreement"] >= 0.9 and row["speedup"] > 0
    assert found.runtime == "openvino_int8" and found.served.suffix == ".ovir"
    DeployedModelDataset(str(tmp_path / "d")).save(
        {"data": found.served.data, "manifest": {"runtime": found.runtime, "suffix": ".ovir"}}
    )
    x = test.x[:64]
    assert torch.equal(load_deployed(tmp_path / "d")(x), found.served.runner(x))  # the same IR, reloaded


def test_an_int8_model_is_served_sparse_through_its_float_twin(models, digits_splits):
    found = _deploy(
        models, digits_splits, "quantized", format="sparse_csr", batch_sizes=[256], serve_batch=256
    )
    row = next(r for r in found.rows if r["runtime"] == "sparse_csr")
    # dynamic int8 picks activation ranges per batch: its float twin agrees on nearly every input
    assert row["test_agreement"] >= 0.98
    reloaded = from_bytes(found.served.data)
    assert [s["method"] for s in reloaded.recipe] == ["magnitude", "sparse_csr"]  # the quantizer step is gone


def test_a_forced_runtime_that_cannot_serve_is_refused_with_the_reason(models, digits_splits):
    with pytest.raises(
        ExportError,
        match=r"export.format 'sparse_csr' asks for runtime 'sparse_csr'.*no float Linear layer is at least 50% sparse",
    ):
        _deploy(models, digits_splits, "teacher", format="sparse_csr")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runtimes": ["tensorrt"]}, r"runtimes\[0\]='tensorrt' .*'onnx_int8'"),
        ({"serve_batch": 8}, r"serve_batch=8 .*one of batch_sizes \[1, 256\]"),
        ({"min_agreement": 1.5}, r"min_agreement=1.5"),
        ({"batch_sizes": []}, r"batch_sizes=\[\]"),
    ],
)
def test_deployment_settings_are_checked(options, message):
    with pytest.raises(ConfigError, match=message):
        ExportConfig(**options)
