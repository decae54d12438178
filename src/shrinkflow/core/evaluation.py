"""One stage's scorecard: quality, size and speed of a model artifact on the test set."""

from __future__ import annotations

from typing import Any

from shrinkflow.core import packing
from shrinkflow.core.artifact import ModelArtifact, to_bytes
from shrinkflow.core.data import Split
from shrinkflow.core.measure import MeasureConfig, count_parameters, latency_ms, throughput_sps
from shrinkflow.core.training import evaluate

__all__ = ["evaluate_artifact", "with_compression_ratio"]


def evaluate_artifact(artifact: ModelArtifact, test: Split, cfg: MeasureConfig) -> dict[str, Any]:
    """Accuracy, loss, parameter counts, sparsity, serialized size and CPU speed of ``artifact``.

    ``artifact_bytes`` is the length of exactly what the artifact dataset writes to disk;
    ``packed_bytes`` the length of its packed form (sparse relative indices, codebooks, Huffman
    coding: :mod:`shrinkflow.core.packing`), which reloads to the same predictions.
    """
    model = artifact.model.eval()
    accuracy, loss = evaluate(model, test, cfg.eval_batch_size)
    total, nonzero = count_parameters(model)
    p50, p95 = latency_ms(model, test.x, cfg)
    return {
        "accuracy": accuracy,
        "loss": loss,
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsity": 1.0 - nonzero / total if total else 0.0,
        "artifact_bytes": len(to_bytes(artifact)),
        "packed_bytes": len(packing.to_bytes(artifact)),
        "latency_b1_p50_ms": p50,
        "latency_b1_p95_ms": p95,
        f"throughput_b{cfg.throughput_batch}_sps": throughput_sps(model, test.x, cfg),
        "test_samples": len(test),
    }


def with_compression_ratio(metrics: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Add ``compression_ratio`` (teacher artifact bytes / this artifact's bytes: the serialized
    file) and ``packed_compression_ratio`` (teacher packed bytes / this stage's packed bytes; the
    dense fp32 teacher packs to its raw fp32 weights plus a small header, as Deep Compression counts)."""
    return {
        **metrics,
        "compression_ratio": teacher["artifact_bytes"] / metrics["artifact_bytes"],
        "packed_compression_ratio": teacher["packed_bytes"] / metrics["packed_bytes"],
    }
