"""What a compressed model costs and how well it does: counts, sparsity, size, speed."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_range
from shrinkflow.core.qgraph import graph_macs, is_int8_graph
from shrinkflow.core.sparsity import module_tensor, weight_tensors
from shrinkflow.core.text import PAD_ID, UNK_ID

__all__ = [
    "MeasureConfig",
    "activation_peak_bytes",
    "count_macs",
    "count_parameters",
    "fixed_threads",
    "gpu_timings",
    "interleaved_seconds",
    "latency_ms",
    "layer_sparsity",
    "model_bytes",
    "noisy_accuracy",
    "throughput_sps",
]


@dataclass
class MeasureConfig(Config):
    """How speed is measured: warm-up runs, timed runs, the large batch for throughput (and for
    peak memory), and a fixed number of CPU threads for every timing (1 by default: figures that do
    not depend on how many cores the machine has or how busy the others are; set it to the serving
    machine's thread count to time that set-up)."""

    warmup: int = 10
    latency_runs: int = 200
    throughput_batch: int = 256
    throughput_runs: int = 20
    eval_batch_size: int = 1024
    threads: int = 1
    #: standard deviations of the Gaussian noise added to the [0, 1] inputs for ``accuracy_noise_<sigma>``
    noise_sigmas: list[float] = field(default_factory=lambda: [0.1, 0.3])
    #: token-id data only: speed and MACs are measured at each of these fixed sequence lengths
    #: (``latency_b1_len<L>_p50_ms``...); the first is the one the unsuffixed fields report
    sequence_lengths: list[int] = field(default_factory=lambda: [32, 128])

    def __post_init__(self) -> None:
        check_range("warmup", self.warmup, 0, 10_000, integer=True)
        check_range("latency_runs", self.latency_runs, 1, 100_000, integer=True)
        check_range("throughput_batch", self.throughput_batch, 1, 1_000_000, integer=True)
        check_range("throughput_runs", self.throughput_runs, 1, 100_000, integer=True)
        check_range("eval_batch_size", self.eval_batch_size, 1, 1_000_000, integer=True)
        check_range("threads", self.threads, 1, 1024, integer=True)
        if not isinstance(self.noise_sigmas, (list, tuple)):
            raise ConfigError("noise_sigmas", self.noise_sigmas, "a list of numbers > 0")
        for i, sigma in enumerate(self.noise_sigmas):
            check_range(f"noise_sigmas[{i}]", sigma, 0.0, 10.0, low_open=True)
        self.noise_sigmas = [float(s) for s in self.noise_sigmas]
        if not isinstance(self.sequence_lengths, (list, tuple)) or not self.sequence_lengths:
            raise ConfigError("sequence_lengths", self.sequence_lengths, "a non-empty list of token counts")
        for i, length in enumerate(self.sequence_lengths):
            check_range(f"sequence_lengths[{i}]", length, 1, 1_000_000, integer=True)
        self.sequence_lengths = [int(n) for n in self.sequence_lengths]


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


@contextlib.contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run torch's CPU ops on ``threads`` intra-op threads inside this block."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


Model = Callable[[torch.Tensor], Any]  # an nn.Module, or an ONNX Runtime session wrapper


def _time_runs(
    model: Model, x: torch.Tensor, warmup: int, runs: int, sync: Callable[[], None] | None = None
) -> list[float]:
    """Wall-clock seconds of ``runs`` forward passes after ``warmup`` untimed ones; ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before and after each timed pass, for asynchronous devices."""
    if isinstance(model, nn.Module):
        model.eval()
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            if sync is not None:
                sync()
            start = time.perf_counter()
            model(x)
            if sync is not None:
                sync()
            times.append(time.perf_counter() - start)
    return times


def interleaved_seconds(
    runners: dict[str, Model], inputs: dict[int, torch.Tensor], rounds: int, runs: dict[int, int], warmup: int
) -> dict[str, dict[int, list[float]]]:
    """``{runner: {batch: [median seconds per call, one per round]}}``, timed in interleaved rounds:
    every round times every runner once at every batch size, so load that hits a round (a shared
    machine) hits all runners alike; compare them by the median of per-round ratios."""
    out: dict[str, dict[int, list[float]]] = {name: {b: [] for b in inputs} for name in runners}
    with torch.inference_mode():
        for runner in runners.values():  # kernels picked, caches and arenas filled once
            for x in inputs.values():
                for _ in range(warmup):
                    runner(x)
        for _ in range(rounds):
            for name, runner in runners.items():
                for b, x in inputs.items():
                    out[name][b].append(statistics.median(_time_runs(runner, x, 0, runs[b])))
    return out


def latency_ms(model: Model, sample: torch.Tensor, cfg: MeasureConfig) -> tuple[float, float]:
    """(p50, p95) wall-clock milliseconds for one batch-1 forward pass."""
    times = sorted(_time_runs(model, sample[:1], cfg.warmup, cfg.latency_runs))
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times) * 1e3, p95 * 1e3


def at_length(tokens: torch.Tensor, length: int) -> torch.Tensor:
    """Token-id rows brought to exactly ``length`` tokens: each row's real tokens repeated (after
    its first, ``[CLS]``) until the row is full, so every position is a real token and the model
    does its full work at that length (speed at a fixed sequence length)."""
    rows = []
    for row in tokens:
        real = row[row != PAD_ID]
        body = real[1:] if len(real) > 1 else real
        reps = -(-(length - 1) // max(len(body), 1))
        rows.append(torch.cat([real[:1], body.repeat(reps)])[:length])
    return torch.stack(rows)


def large_batch(samples: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` samples (``samples`` repeated when it holds fewer)."""
    reps = -(-n // samples.shape[0])
    return samples.repeat(reps, *([1] * (samples.ndim - 1)))[:n]


def throughput_sps(model: Model, samples: torch.Tensor, cfg: MeasureConfig) -> float:
    """Samples per second at batch ``cfg.throughput_batch`` (median over timed runs)."""
    batch = large_batch(samples, cfg.throughput_batch)
    median = statistics.median(_time_runs(model, batch, max(1, cfg.warmup // 5), cfg.throughput_runs))
    return cfg.throughput_batch / median


def model_bytes(model: nn.Module) -> int:
    """Bytes the model's tensors occupy in memory: parameters and buffers, and the int8 weights
    that ``torch.ao`` quantized modules keep packed outside their parameters (read back through
    their state_dict, where they appear as qint8 tensors)."""
    total = 0

    def add(value: Any) -> None:
        nonlocal total
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)

    for value in model.state_dict().values():
        add(value)
    return total


@contextlib.contextmanager
def _silent_stderr() -> Iterator[None]:
    # The profiler's C++ side (kineto) prints start/stop lines straight to file descriptor 2 on
    # every use, which no Python-level filter reaches; errors still surface as Python exceptions.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def activation_peak_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Peak bytes of the tensors one forward pass of ``batch`` allocates on top of what was already
    allocated (inputs and weights excluded), from torch's profiler memory events.

    The profiler sees every tensor torch's CPU allocator hands out, and not the scratch buffers
    kernel libraries allocate themselves (fbgemm's packed activations for int8): those are small
    next to the activations at large batches. Hand-counting with hooks would miss the
    intermediates inside a layer (the int32 accumulators of int8 kernels), so events it is.
    """
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    model.eval()
    with (
        torch.inference_mode(),
        _silent_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        model(batch)
    events = sorted(
        (
            e
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
        ),
        key=lambda e: e.start_ns(),
    )
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def count_macs(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """(dense, non-zero) multiply-accumulates of one forward pass of one sample, over Linear and
    Conv layers, float or quantized, and the attention products of modules that count their own
    (``attention_macs``: :class:`shrinkflow.core.textmodels.Attention`). ``non-zero`` counts only
    products with non-zero weights: the work a sparse kernel would do.

    Counted with forward hooks rather than ``torch.utils.flop_counter``: the flop counter sees
    float aten ops only, so the int8 kernels of ``torch.ao`` quantized modules count as zero.
    A layer's MACs are (output elements / output channels) x weight elements: for a Linear its
    in x out, for a Conv2d the output positions x out x in/groups x kernel.
    """
    if is_int8_graph(model):
        return graph_macs(model, sample)  # type: ignore[arg-type]
    counts = [0, 0]

    def hook(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        weight = module_tensor(module)
        out = output[0] if isinstance(output, tuple) else output
        if weight is None or not isinstance(out, torch.Tensor) or weight.ndim < 2:
            return
        channels = weight.shape[0]
        positions = out.numel() // (out.shape[0] * channels)
        counts[0] += positions * weight.numel()
        counts[1] += positions * int(torch.count_nonzero(weight))

    def attention(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: object) -> None:
        # the two activation products of self-attention (scores and their weighted values): no
        # weights, so they count the same dense and non-zero
        extra = module.attention_macs(inputs[0])  # type: ignore[operator]
        counts[0] += extra
        counts[1] += extra

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        # quantized Linear keeps its weights in a child module, so children are no criterion
        if hasattr(m, "in_features") or hasattr(m, "in_channels")
    ]
    handles += [
        m.register_forward_hook(attention)
        for m in model.modules()
        if callable(getattr(m, "attention_macs", None))
    ]
    try:
        model.eval()
        with torch.inference_mode():
            model(sample[:1])
    finally:
        for handle in handles:
            handle.remove()
    return counts[0], counts[1]


def noisy_accuracy(model: nn.Module, data: Any, sigma: float, batch_size: int = 1024, seed: int = 0) -> float:
    """Top-1 accuracy on the split ``data`` with Gaussian noise of standard deviation ``sigma`` added
    to the inputs (not clipped), the same noise for every model (a fixed seed, drawn on the CPU), so
    stages compare like for like. Token ids (integer inputs) get the text analogue: each real token
    after the first (``[CLS]``) is replaced by ``[UNK]`` with probability ``sigma``. Runs where the
    model is."""
    from shrinkflow.core.training import reader

    generator = torch.Generator().manual_seed(seed)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    correct = seen = 0
    model.eval()
    with torch.inference_mode():
        for batch, labels in reader(data, batch_size):
            if batch.dtype.is_floating_point:
                noise = torch.randn(batch.shape, generator=generator, dtype=batch.dtype)
                noisy = batch + sigma * noise
            else:
                hit = torch.rand(batch.shape, generator=generator) < sigma
                hit[:, 0] = False
                noisy = torch.where(hit & (batch != PAD_ID), torch.full_like(batch, UNK_ID), batch)
            logits = model(noisy.to(device)).cpu()
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
    return correct / max(seen, 1)


def gpu_timings(model: nn.Module, data: Any, cfg: MeasureConfig) -> dict[str, float]:
    """Median batch-1 latency and throughput at ``cfg.throughput_batch`` on the model's CUDA device,
    timed with ``torch.cuda.synchronize`` around each run (kernels are asynchronous)."""
    device = next(p.device for p in model.parameters())
    sample = data.head(cfg.throughput_batch).to(device)

    def timed(x: torch.Tensor, runs: int) -> float:
        return statistics.median(
            _time_runs(model, x, cfg.warmup, runs, lambda: torch.cuda.synchronize(device))
        )

    batch = large_batch(sample, cfg.throughput_batch)
    return {
        "gpu_latency_b1_ms": timed(sample[:1], cfg.latency_runs) * 1e3,
        f"gpu_throughput_b{cfg.throughput_batch}_sps": cfg.throughput_batch
        / timed(batch, cfg.throughput_runs),
    }
