"""Interleaved timing rounds shared by the benchmark scripts (peers.py, cnn.py)."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from shrinkflow.core.measure import MeasureConfig, large_batch, latency_ms, throughput_sps


def time_rounds(
    found: dict[str, dict[str, Any]], x: torch.Tensor, rounds: int, b1_runs: int, b256_runs: int, warmup: int
) -> None:
    """Fill each variant's per-round batch-1 latency (``b1_ms``) and batch-256 throughput
    (``b256_sps``) of ``found[name]["runner"]``, interleaved: every round times every variant once,
    so machine noise that hits a round hits them all."""
    one, big = x[:1].contiguous(), large_batch(x, 256).contiguous()
    # each call: the median of that many timed runs (warm-up is done once, below)
    b1 = MeasureConfig(warmup=0, latency_runs=b1_runs)
    b256 = MeasureConfig(warmup=0, throughput_batch=256, throughput_runs=b256_runs)
    with torch.inference_mode():
        for v in found.values():  # warm-up: kernels picked, caches and arenas filled
            for _ in range(warmup):
                v["runner"](one)
                v["runner"](big)
            v["b1_ms"], v["b256_sps"] = [], []
        for _ in range(rounds):
            for v in found.values():
                v["b1_ms"].append(latency_ms(v["runner"], one, b1)[0])
                v["b256_sps"].append(throughput_sps(v["runner"], big, b256))


def timing_row(variant: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Median batch-1 latency and batch-256 throughput of one timed variant, and its speed-ups over
    ``base`` computed round by round (each round's ratio, then the median)."""
    lat = [b / a for a, b in zip(variant["b1_ms"], base["b1_ms"], strict=True)]
    thr = [a / b for a, b in zip(variant["b256_sps"], base["b256_sps"], strict=True)]
    return {
        "latency_b1_ms": statistics.median(variant["b1_ms"]),
        "latency_b1_speedup": statistics.median(lat),
        "throughput_b256_sps": statistics.median(variant["b256_sps"]),
        "throughput_b256_speedup": statistics.median(thr),
        "throughput_b256_speedup_range": [min(thr), max(thr)],
    }
