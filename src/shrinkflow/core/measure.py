"""What a compressed model costs and how well it does: counts, sparsity, size, speed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from shrinkflow.core.config import Config, check_range
from shrinkflow.core.sparsity import weight_tensors

__all__ = ["MeasureConfig", "count_parameters", "latency_ms", "layer_sparsity", "throughput_sps"]


@dataclass
class MeasureConfig(Config):
    """How speed is measured: warm-up runs, timed runs, the large batch for throughput."""

    warmup: int = 10
    latency_runs: int = 200
    throughput_batch: int = 256
    throughput_runs: int = 20
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        check_range("warmup", self.warmup, 0, 10_000, integer=True)
        check_range("latency_runs", self.latency_runs, 1, 100_000, integer=True)
        check_range("throughput_batch", self.throughput_batch, 1, 1_000_000, integer=True)
        check_range("throughput_runs", self.throughput_runs, 1, 100_000, integer=True)
        check_range("eval_batch_size", self.eval_batch_size, 1, 1_000_000, integer=True)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, non-zero) weights and biases, counting quantized modules by their dequantized values."""
    total = nonzero = 0
    for _, tensor in weight_tensors(model):
        total += tensor.numel()
        nonzero += int(torch.count_nonzero(tensor))
    return total, nonzero


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each weight tensor (biases excluded)."""
    return {
        name: 1.0 - int(torch.count_nonzero(t)) / t.numel()
        for name, t in weight_tensors(model)
        if name.endswith("weight") and t.numel()
    }


def _time_runs(model: nn.Module, x: torch.Tensor, warmup: int, runs: int) -> list[float]:
    model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return times


def latency_ms(model: nn.Module, sample: torch.Tensor, cfg: MeasureConfig) -> tuple[float, float]:
    """(p50, p95) wall-clock milliseconds for one batch-1 forward pass."""
    times = sorted(_time_runs(model, sample[:1], cfg.warmup, cfg.latency_runs))
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times) * 1e3, p95 * 1e3


def throughput_sps(model: nn.Module, samples: torch.Tensor, cfg: MeasureConfig) -> float:
    """Samples per second at batch ``cfg.throughput_batch`` (median over timed runs)."""
    n = cfg.throughput_batch
    reps = -(-n // samples.shape[0])
    batch = samples.repeat(reps, *([1] * (samples.ndim - 1)))[:n]
    median = statistics.median(_time_runs(model, batch, max(1, cfg.warmup // 5), cfg.throughput_runs))
    return n / median
