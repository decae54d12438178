"""Device and precision: resolution, mixed-precision training, models back on the CPU."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import split_data
from shrinkflow.core.models import ModelSpec, build_model
from shrinkflow.core.runtime import Runtime, RuntimeConfig, placement, resolve_device
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything

no_cuda = pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the messages of a machine without CUDA"
)


def test_auto_is_the_cpu_on_a_machine_without_accelerators():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("this machine has an accelerator")
    assert resolve_device("auto") == torch.device("cpu")
    assert RuntimeConfig().resolve() == Runtime()  # the default runtime is the CPU in fp32


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_missing_gpu_is_named_with_what_this_machine_has(name):
    with pytest.raises(ConfigError, match=r"0 visible; torch .* built with"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["tpu", "gpu0", 3])
def test_an_unknown_device_lists_the_choices(name):
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


def test_a_stage_override_is_named_in_errors():
    with pytest.raises(ConfigError) as info:
        RuntimeConfig().resolve(device="tpu", key="train_teacher")
    assert info.value.key == "train_teacher.device"
    with pytest.raises(ConfigError) as info:
        RuntimeConfig(precision="fp8")
    assert info.value.key == "precision"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_to_the_fp32_accuracy_with_fp32_weights(digits_raw, precision):
    train, val, _ = split_data(digits_raw, 0.15, 0.2, seed=0)
    results, losses = {}, {}
    for prec in ("fp32", precision):
        seed_everything(0)
        model = build_model(ModelSpec("mlp", {"hidden": [64]}), train.input_shape, 10)
        history = fit(
            model, train, TrainConfig(epochs=10, lr=3e-3), runtime=Runtime(torch.device("cpu"), prec)
        )
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
        results[prec], losses[prec] = evaluate(model, val)[0], history[0].loss
    assert results["fp32"] > 0.9
    assert abs(results[precision] - results["fp32"]) <= 0.03, results
    # autocast ran the layers in 16 bits: the first epoch's loss moved, by little
    assert losses[precision] != losses["fp32"] and abs(losses[precision] - losses["fp32"]) < 0.01


def test_int8_models_are_evaluated_on_the_cpu():
    dense = torch.nn.Sequential(torch.nn.Linear(4, 4))
    quantized = torch.ao.quantization.quantize_dynamic(dense, {torch.nn.Linear}, dtype=torch.qint8)
    assert placement(quantized, torch.device("cuda")) == torch.device("cpu")
    assert placement(dense, torch.device("cuda")) == torch.device("cuda")
