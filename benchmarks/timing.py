"""Interleaved timing rounds shared by the benchmark scripts (peers.py, cnn.py)."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from shrinkflow.core.measure import interleaved_seconds, large_batch


def time_rounds(
    found: dict[str, dict[str, Any]], x: torch.Tensor, rounds: int, b1_runs: int, b256_runs: int, warmup: int
) -> None:
    """Fill each variant's per-round batch-1 latency (``b1_ms``) and batch-256 throughput
    (``b256_sps``) of ``found[name]["runner"]``, interleaved: every round times every variant once,
    so machine noise that hits a round hits them all (the export stage's timing loop,
    :func:`shrinkflow.core.measure.interleaved_seconds`, each call the median of that many runs)."""
    inputs = {1: x[:1].contiguous(), 256: large_batch(x, 256).contiguous()}
    runners = {name: v["runner"] for name, v in found.items()}
    seconds = interleaved_seconds(runners, inputs, rounds, {1: b1_runs, 256: b256_runs}, warmup)
    for name, v in found.items():
        v["b1_ms"] = [1e3 * s for s in seconds[name][1]]
        v["b256_sps"] = [256 / s for s in seconds[name][256]]


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
