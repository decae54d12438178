"""Dynamic int8 quantization: module types, 4x smaller artifacts, accuracy kept, restore, config."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import LeNet5, ModelSpec
from shrinkflow.core.training import TrainConfig, evaluate, fit, predict, seed_everything
from shrinkflow.methods.quantization.dynamic_int8 import DynamicInt8Config, plugin
from shrinkflow.stages import QuantizeStage


@pytest.fixture(scope="module")
def wide(digits_splits) -> ModelArtifact:
    """MLP(256, 256) trained for 3 epochs on digits."""
    seed_everything(0)
    art = ModelArtifact.build(ModelSpec("mlp", {"hidden": [256, 256]}), (1, 8, 8), 10)
    fit(art.model, digits_splits[0], TrainConfig(epochs=3, lr=3e-3))
    art.model.eval()
    return art


def test_plugin_is_registered():
    assert plugins.load(plugins.QUANTIZERS, "dynamic_int8") is plugin


def test_every_linear_becomes_a_dynamic_quantized_linear(wide, make_ctx):
    model = copy.deepcopy(wide.model)
    out = plugin.apply(model, DynamicInt8Config(), make_ctx())
    linears = [m for m in out.modules() if isinstance(m, (nn.Linear, qdynamic.Linear))]
    assert len(linears) == 3 and all(type(m) is qdynamic.Linear for m in linears)
    assert all(m.weight().dtype == torch.qint8 for m in linears)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))  # input untouched


def test_int8_artifact_is_over_three_times_smaller_and_keeps_accuracy(wide, make_ctx, digits_splits):
    test = digits_splits[2]
    quantized = wide.with_step(
        plugin.apply(copy.deepcopy(wide.model), DynamicInt8Config(), make_ctx()),
        plugins.QUANTIZERS,
        "dynamic_int8",
        DynamicInt8Config().to_dict(),
    )
    ratio = len(artifact.to_bytes(wide)) / len(artifact.to_bytes(quantized))
    assert 3.0 < ratio < 4.0
    float_accuracy, quant_accuracy = evaluate(wide.model, test)[0], evaluate(quantized.model, test)[0]
    assert float_accuracy > 0.85
    assert abs(quant_accuracy - float_accuracy) <= 0.01
    agreement = (
        (predict(wide.model, test.x).argmax(1) == predict(quantized.model, test.x).argmax(1)).float().mean()
    )
    assert float(agreement) >= 0.98


def test_logits_stay_close_to_the_float_model(wide, make_ctx, digits_splits):
    x = digits_splits[2].x
    reference = predict(wide.model, x)
    quantized = predict(plugin.apply(copy.deepcopy(wide.model), DynamicInt8Config(), make_ctx()), x)
    assert float((quantized - reference).abs().max()) < 0.05 * float(reference.abs().max())


def test_convolutions_stay_float(make_ctx):
    torch.manual_seed(0)
    out = plugin.apply(LeNet5((1, 8, 8), 10), DynamicInt8Config(), make_ctx())
    assert type(out.features[0]) is nn.Conv2d and type(out.features[3]) is nn.Conv2d
    assert [type(out.classifier[i]) for i in (0, 2, 4)] == [qdynamic.Linear] * 3
    assert out(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_restore_rebuilds_the_structure_for_the_saved_state(wide, make_ctx, digits_splits):
    quantized = plugin.apply(copy.deepcopy(wide.model), DynamicInt8Config(), make_ctx())
    fresh = ModelArtifact.build(ModelSpec("mlp", {"hidden": [256, 256]}), (1, 8, 8), 10).model
    restored = plugin.restore(fresh, DynamicInt8Config())
    assert [type(m) for m in restored.modules()] == [type(m) for m in quantized.modules()]
    restored.load_state_dict(quantized.state_dict())
    x = digits_splits[2].x
    assert torch.equal(predict(restored, x), predict(quantized, x))


# --- config ---------------------------------------------------------------------------------------


def test_config_defaults_normalise_modules_to_a_list():
    cfg = DynamicInt8Config()
    assert cfg.engine == "x86" and cfg.modules == ["Linear"]
    assert DynamicInt8Config(modules=("Linear", "GRU")).modules == ["Linear", "GRU"]
    assert DynamicInt8Config.from_dict(cfg.to_dict()) == cfg


def test_unsupported_engine_lists_the_supported_ones():
    with pytest.raises(ConfigError) as info:
        DynamicInt8Config(engine="tpu")
    supported = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    assert str(info.value) == f"engine='tpu' is invalid: expected one of {supported}"


@pytest.mark.parametrize("modules", [[], ["Conv2d"], ["Linear", "Embedding"], ()])
def test_modules_must_be_quantizable_types(modules):
    with pytest.raises(ConfigError) as info:
        DynamicInt8Config(modules=modules)
    assert info.value.key == "modules"
    assert info.value.expected == "a non-empty list drawn from ['GRU', 'LSTM', 'Linear']"


def test_stage_errors_carry_the_dotted_key():
    with pytest.raises(
        ConfigError, match=r"^quantize\.options\.dynamic_int8\.modules=\['Conv2d'\] is invalid"
    ):
        QuantizeStage(method="dynamic_int8", options={"dynamic_int8": {"modules": ["Conv2d"]}})
