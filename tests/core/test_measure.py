"""Measurements: parameter counts (float and quantized), per-layer sparsity, latency, throughput."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.measure import (
    MeasureConfig,
    activation_peak_bytes,
    count_macs,
    count_parameters,
    fixed_threads,
    latency_ms,
    layer_sparsity,
    model_bytes,
    noisy_accuracy,
    throughput_sps,
)
from shrinkflow.core.models import MLP, LeNet5, lenet_300_100

QUICK = MeasureConfig(warmup=2, latency_runs=20, throughput_batch=16, throughput_runs=5)


def _quantized(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return MLP((1, 8, 8), 10, hidden=(32, 16))


def test_count_parameters_counts_weights_and_biases():
    model = _mlp()
    total = 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert count_parameters(model) == (total, total)
    assert total == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model[1].weight[:5] = 0.0  # 5 rows of 64
        model[5].bias[:3] = 0.0
    assert count_parameters(model) == (total, total - 5 * 64 - 3)


def test_quantized_model_has_the_same_total_and_keeps_zeros():
    model = _mlp()
    with torch.no_grad():
        model[3].weight[:, :8] = 0.0  # 16 * 8 zeros
    total, nonzero = count_parameters(model)
    q_total, q_nonzero = count_parameters(_quantized(model))
    assert q_total == total == 2778
    # symmetric int8 maps 0 to 0 exactly; tiny weights may also round to 0, never the reverse
    assert total - 200 < q_nonzero <= nonzero == total - 128


def test_count_parameters_covers_conv_layers():
    torch.manual_seed(0)
    model = LeNet5((1, 28, 28), 10)
    assert count_parameters(model)[0] == 61_706
    assert count_parameters(_quantized(model))[0] == 61_706  # convs stay float, linears are packed


def test_layer_sparsity_reports_each_weight_tensor():
    model = _mlp()
    with torch.no_grad():
        model[1].weight.view(-1)[: 64 * 32 // 4] = 0.0  # exactly 25 %
        model[5].weight.zero_()
        model[3].bias.zero_()  # biases are not reported
    assert layer_sparsity(model) == {"1.weight": 0.25, "3.weight": 0.0, "5.weight": 1.0}
    quantized = layer_sparsity(_quantized(model))
    assert list(quantized) == ["1.weight", "3.weight", "5.weight"]
    assert quantized["1.weight"] >= 0.25 and quantized["5.weight"] == 1.0


def test_layer_sparsity_of_conv_layers():
    model = LeNet5((1, 28, 28), 10)
    with torch.no_grad():
        model.features[0].weight[:3] = 0.0  # 3 of 6 filters
    sparsity = layer_sparsity(model)
    assert sparsity["features.0.weight"] == 0.5 and len(sparsity) == 5


def test_latency_percentiles_are_ordered_and_positive():
    model = _mlp()
    p50, p95 = latency_ms(model, torch.rand(10, 1, 8, 8), QUICK)
    assert 0.0 < p50 <= p95 < 1_000.0


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        return self.fc(x.flatten(1))


def test_latency_times_batch_one_forward_passes_after_warm_up():
    model = _Recorder().train()
    latency_ms(model, torch.rand(10, 1, 8, 8), MeasureConfig(warmup=3, latency_runs=7))
    assert model.batches == [1] * 10 and not model.training


def test_throughput_uses_the_configured_batch_even_with_few_samples():
    model = _Recorder()
    sps = throughput_sps(
        model, torch.rand(3, 1, 8, 8), MeasureConfig(warmup=10, throughput_batch=16, throughput_runs=4)
    )
    assert sps > 0.0 and model.batches == [16] * (2 + 4)  # warm-up is warmup // 5 runs


def test_throughput_of_quantized_model_is_positive():
    assert throughput_sps(_quantized(_mlp()), torch.rand(40, 1, 8, 8), QUICK) > 0.0


@pytest.mark.parametrize(
    "options",
    [
        {"warmup": -1},
        {"latency_runs": 0},
        {"throughput_batch": 0},
        {"throughput_runs": 1.5},
        {"eval_batch_size": 0},
        {"noise_sigmas": 0.1},
        {"threads": 0},
    ],
)
def test_measure_config_rejects_bad_values(options):
    (key,) = options
    with pytest.raises(ConfigError) as info:
        MeasureConfig(**options)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (lambda: MLP((1, 8, 8), 10, hidden=(32, 16)), (1, 8, 8)),
        (lambda: LeNet5((1, 28, 28), 10), (1, 28, 28)),
    ],
)
def test_count_macs_agrees_with_torchs_flop_counter_on_float_models(model, shape):
    from torch.utils.flop_counter import FlopCounterMode

    net = model().eval()
    x = torch.rand(3, *shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(x[:1])
    dense, nonzero = count_macs(net, x)
    assert dense == nonzero == counter.get_total_flops() // 2


def test_count_macs_sees_int8_kernels_and_counts_non_zero_weights():
    model = _mlp()
    with torch.no_grad():
        model[1].weight[:, :32] = 0  # half of the first layer's 64 x 32 weights (MLP: flatten, linear, ...)
    dense, nonzero = count_macs(model, torch.rand(2, 1, 8, 8))
    assert dense == 64 * 32 + 32 * 16 + 16 * 10 and nonzero == dense - 32 * 32
    q_dense, q_nonzero = count_macs(_quantized(model), torch.rand(2, 1, 8, 8))
    # int8 rounding sends a few tiny weights to exactly zero as well
    assert q_dense == dense and nonzero - 0.01 * dense <= q_nonzero <= nonzero


def test_noisy_accuracy_is_reproducible_and_falls_with_sigma():
    torch.manual_seed(0)
    x = torch.rand(256, 1, 8, 8)
    model = _mlp()
    y = model(x).argmax(1)  # labels the clean model gets all right
    data = Split.of(x, y, 10)
    first = noisy_accuracy(model, data, 0.5)
    assert first == noisy_accuracy(model, data, 0.5)
    assert 1.0 > first > noisy_accuracy(model, data, 3.0)


def test_a_non_positive_noise_sigma_is_named():
    with pytest.raises(ConfigError) as info:
        MeasureConfig(noise_sigmas=[0.1, -0.2])
    assert info.value.key == "noise_sigmas[1]"


def test_model_bytes_counts_packed_int8_weights_at_one_byte_each():
    model = lenet_300_100((1, 28, 28), 10).eval()
    params = sum(p.numel() for p in model.parameters())
    assert model_bytes(model) == 4 * params  # 266,610 fp32 values
    int8 = model_bytes(_quantized(model))
    weights = 784 * 300 + 300 * 100 + 100 * 10
    # int8 weights + fp32 biases + a per-layer scale and zero point
    assert weights + 4 * (300 + 100 + 10) <= int8 <= weights + 4 * (300 + 100 + 10) + 64 * 3


def test_activation_peak_covers_the_layer_outputs_and_scales_with_the_batch():
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 10)).eval()
    small, large = (activation_peak_bytes(model, torch.rand(n, 784)) for n in (16, 256))
    assert large >= 256 * 300 * 4  # the hidden activations are live at least once
    assert large == pytest.approx(16 * small, rel=0.05)


def test_int8_lenet_300_100_needs_less_inference_memory_than_fp32_at_batch_256():
    model = lenet_300_100((1, 28, 28), 10).eval()
    batch = torch.rand(256, 1, 28, 28)
    fp32 = model_bytes(model) + activation_peak_bytes(model, batch)
    int8 = model_bytes(_quantized(model)) + activation_peak_bytes(_quantized(model), batch)
    assert int8 < 0.7 * fp32


def test_fixed_threads_sets_and_restores_torchs_thread_count():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_latency_and_throughput_time_any_callable():
    calls = []

    def runner(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.sum(1)

    cfg = MeasureConfig(warmup=2, latency_runs=5, throughput_batch=8, throughput_runs=3)
    p50, p95 = latency_ms(runner, torch.rand(4, 3), cfg)
    assert 0 < p50 <= p95 and calls == [1] * 7
    assert throughput_sps(runner, torch.rand(4, 3), cfg) > 0 and calls[7:] == [8] * 4


def test_text_models_are_timed_and_counted_at_each_fixed_sequence_length():
    from shrinkflow.core.artifact import ModelArtifact
    from shrinkflow.core.data import Split
    from shrinkflow.core.evaluation import evaluate_artifact
    from shrinkflow.core.measure import MeasureConfig, at_length
    from shrinkflow.core.models import ModelSpec

    tokens = torch.tensor([[2, 7, 8, 9, 0, 0], [2, 5, 0, 0, 0, 0]])
    assert at_length(tokens, 8).tolist() == [[2, 7, 8, 9, 7, 8, 9, 7], [2, 5, 5, 5, 5, 5, 5, 5]]
    assert at_length(tokens, 3).tolist() == [[2, 7, 8], [2, 5, 5]]
    spec = ModelSpec(
        "transformer_encoder", {"vocab_size": 30, "d_model": 16, "heads": 2, "layers": 2, "ffn": 32}
    )
    artifact = ModelArtifact.build(spec, (64,), 2)
    data = Split.of(torch.randint(2, 30, (40, 12)), torch.randint(0, 2, (40,)), 2)
    cfg = MeasureConfig(
        warmup=1, latency_runs=3, throughput_batch=8, throughput_runs=2, sequence_lengths=[16, 64]
    )
    metrics = evaluate_artifact(artifact, data, cfg)
    linear = 2 * (4 * 16 * 16 + 2 * 16 * 32)  # per token, 2 layers
    for n in (16, 64):
        assert metrics[f"macs_len{n}"] == n * linear + 2 * (2 * n * n * 16) + 16 * 2
        assert metrics[f"latency_b1_len{n}_p50_ms"] > 0 and metrics[f"throughput_b8_len{n}_sps"] > 0
    # the headline figures are the first length's
    assert metrics["macs"] == metrics["macs_len16"]
    assert metrics["latency_b1_p50_ms"] == metrics["latency_b1_len16_p50_ms"]
    with pytest.raises(ConfigError, match="sequence_lengths"):
        MeasureConfig(sequence_lengths=[])
