"""Half precision: tensors stored in float16/bfloat16, a 2x smaller artifact, accuracy kept, reload exact."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import LeNet5, ModelSpec
from shrinkflow.core.training import TrainConfig, evaluate, fit, predict, seed_everything
from shrinkflow.methods.quantization.half import HalfConfig, HalfPrecision, half, plugin, restore
from shrinkflow.stages import QuantizeStage

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@pytest.fixture(scope="module")
def wide(digits_splits) -> ModelArtifact:
    """MLP(256, 256) trained for 3 epochs on digits."""
    seed_everything(0)
    art = ModelArtifact.build(ModelSpec("mlp", {"hidden": [256, 256]}), (1, 8, 8), 10)
    fit(art.model, digits_splits[0], TrainConfig(epochs=3, lr=3e-3))
    art.model.eval()
    return art


def _half(art: ModelArtifact, cfg: HalfConfig, make_ctx) -> ModelArtifact:
    model = plugin.apply(copy.deepcopy(art.model), cfg, make_ctx())
    return art.with_step(model, plugins.QUANTIZERS, "half", cfg.to_dict())


def test_plugin_is_registered():
    assert plugins.load(plugins.QUANTIZERS, "half") is plugin
    assert plugin.apply is half and plugin.restore is restore


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tensors_are_stored_in_half_and_the_artifact_is_half_the_size(wide, make_ctx, dtype):
    quantized = _half(wide, HalfConfig(dtype=dtype), make_ctx)
    assert isinstance(quantized.model, HalfPrecision)
    assert {t.dtype for t in quantized.model.state_dict().values()} == {DTYPES[dtype]}
    ratio = len(artifact.to_bytes(wide)) / len(artifact.to_bytes(quantized))
    assert 1.9 < ratio <= 2.0  # measured 1.98 (the header does not shrink)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_accuracy_stays_within_half_a_point_of_float32(wide, make_ctx, digits_splits, dtype):
    test = digits_splits[2]
    quantized = _half(wide, HalfConfig(dtype=dtype), make_ctx).model
    assert evaluate(wide.model, test)[0] > 0.9
    assert abs(evaluate(quantized, test)[0] - evaluate(wide.model, test)[0]) <= 0.005
    agreement = (predict(wide.model, test.x).argmax(1) == predict(quantized, test.x).argmax(1)).float().mean()
    assert float(agreement) >= 0.99


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_float32_compute_is_exactly_the_model_with_rounded_weights(wide, make_ctx, digits_splits, dtype):
    x = digits_splits[2].x
    rounded = copy.deepcopy(wide.model)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(DTYPES[dtype]).float())
    quantized = _half(wide, HalfConfig(dtype=dtype), make_ctx).model
    out = predict(quantized, x)
    assert out.dtype == torch.float32 and torch.equal(out, predict(rounded, x))


def test_native_compute_runs_on_the_cpu_and_matches(wide, make_ctx, digits_splits):
    x = digits_splits[2].x
    weight_only = predict(_half(wide, HalfConfig(), make_ctx).model, x)
    native = predict(_half(wide, HalfConfig(compute="native"), make_ctx).model, x)
    assert native.dtype == torch.float32
    assert float((native - weight_only).abs().max()) < 0.01 * float(weight_only.abs().max())


@pytest.mark.parametrize("cfg", [HalfConfig(), HalfConfig(dtype="bfloat16", compute="native")])
def test_the_artifact_reloads_with_identical_predictions(wide, make_ctx, digits_splits, tmp_path, cfg):
    quantized = _half(wide, cfg, make_ctx)
    artifact.save(quantized, tmp_path / "half.pt")
    reloaded = artifact.load(tmp_path / "half.pt")
    assert isinstance(reloaded.model, HalfPrecision) and reloaded.model.dtype == DTYPES[cfg.dtype]
    x = digits_splits[2].x
    assert torch.equal(predict(reloaded.model, x), predict(quantized.model, x))


def test_convolutions_work(make_ctx):
    torch.manual_seed(0)
    model = LeNet5((1, 8, 8), 10).eval()
    x = torch.rand(4, 1, 8, 8)
    wrapped = plugin.apply(copy.deepcopy(model), HalfConfig(), make_ctx())
    with torch.no_grad():
        out, reference = wrapped(x), model(x)
    assert out.dtype == torch.float32 and float((out - reference).abs().max()) < 1e-2
    assert (
        type(wrapped.inner.features[3]) is nn.Conv2d
        and wrapped.inner.features[3].weight.dtype == torch.float16
    )


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dtype": "float8"}, "dtype='float8' is invalid: expected one of ['float16', 'bfloat16']"),
        ({"dtype": "half"}, "dtype='half' is invalid: expected one of ['float16', 'bfloat16']"),
        ({"compute": "gpu"}, "compute='gpu' is invalid: expected one of ['float32', 'native']"),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        HalfConfig(**options)
    assert str(info.value) == message


def test_stage_errors_carry_the_dotted_key_and_defaults_round_trip():
    with pytest.raises(ConfigError, match=r"^quantize\.options\.half\.dtype='fp8' is invalid"):
        QuantizeStage(method="half", options={"half": {"dtype": "fp8"}})
    cfg = plugin.config({})
    assert cfg == HalfConfig(dtype="float16", compute="float32")
    assert HalfConfig.from_dict(cfg.to_dict()) == cfg
