"""One stage's scorecard: quality, size and speed of a model artifact on the test set."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from shrinkflow.core import packing
from shrinkflow.core.artifact import ModelArtifact, to_bytes
from shrinkflow.core.data import Split
from shrinkflow.core.measure import (
    MeasureConfig,
    count_macs,
    count_parameters,
    latency_ms,
    layer_sparsity,
    noisy_accuracy,
    throughput_sps,
)
from shrinkflow.core.training import predict

__all__ = ["evaluate_artifact", "with_compression_ratio"]


def evaluate_artifact(
    artifact: ModelArtifact, test: Split, cfg: MeasureConfig, teacher: ModelArtifact | None = None
) -> dict[str, Any]:
    """Accuracy, robustness, agreement with the teacher, counts, sparsity, size and CPU speed.

    ``artifact_bytes`` is the length of exactly what the artifact dataset writes to disk;
    ``packed_bytes`` the length of its packed form (sparse relative indices, codebooks, Huffman
    coding: :mod:`shrinkflow.core.packing`), which reloads to the same predictions.
    ``macs`` / ``macs_nonzero``: multiply-accumulates per sample (dense / with non-zero weights);
    ``accuracy_noise_<sigma>``: accuracy with Gaussian input noise; ``teacher_agreement``: the share
    of test predictions equal to the teacher's; ``top5_accuracy`` when there are more than 5 classes.
    """
    model = artifact.model.eval()
    logits = predict(model, test.x, cfg.eval_batch_size)
    accuracy = int((logits.argmax(1) == test.y).sum()) / len(test)
    total, nonzero = count_parameters(model)
    macs, macs_nonzero = count_macs(model, test.x)
    p50, p95 = latency_ms(model, test.x, cfg)
    metrics: dict[str, Any] = {
        "accuracy": accuracy,
        "loss": float(F.cross_entropy(logits, test.y)),
    }
    if test.num_classes > 5:
        top5 = logits.topk(5, dim=1).indices
        metrics["top5_accuracy"] = int((top5 == test.y[:, None]).any(1).sum()) / len(test)
    for sigma in cfg.noise_sigmas:
        metrics[f"accuracy_noise_{sigma:g}"] = noisy_accuracy(
            model, test.x, test.y, sigma, cfg.eval_batch_size
        )
    if teacher is not None:
        reference = (
            logits if teacher is artifact else predict(teacher.model.eval(), test.x, cfg.eval_batch_size)
        )
        metrics["teacher_agreement"] = int((reference.argmax(1) == logits.argmax(1)).sum()) / len(test)
    metrics.update(
        {
            "params_total": total,
            "params_nonzero": nonzero,
            "sparsity": 1.0 - nonzero / total if total else 0.0,
            "layer_sparsity": layer_sparsity(model),
            "macs": macs,
            "macs_nonzero": macs_nonzero,
            "artifact_bytes": len(to_bytes(artifact)),
            "packed_bytes": len(packing.to_bytes(artifact)),
            "latency_b1_p50_ms": p50,
            "latency_b1_p95_ms": p95,
            f"throughput_b{cfg.throughput_batch}_sps": throughput_sps(model, test.x, cfg),
            "test_samples": len(test),
        }
    )
    return metrics


def with_compression_ratio(metrics: dict[str, Any], teacher: dict[str, Any]) -> dict[str, Any]:
    """Add ``compression_ratio`` (teacher artifact bytes / this artifact's bytes: the serialized
    file) and ``packed_compression_ratio`` (teacher packed bytes / this stage's packed bytes; the
    dense fp32 teacher packs to its raw fp32 weights plus a small header, as Deep Compression counts)."""
    return {
        **metrics,
        "compression_ratio": teacher["artifact_bytes"] / metrics["artifact_bytes"],
        "packed_compression_ratio": teacher["packed_bytes"] / metrics["packed_bytes"],
    }
