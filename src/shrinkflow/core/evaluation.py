"""One stage's scorecard: quality, size and speed of a model artifact on the test set."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from shrinkflow.core import packing
from shrinkflow.core.artifact import ModelArtifact, to_bytes
from shrinkflow.core.data import Split
from shrinkflow.core.measure import (
    MeasureConfig,
    activation_peak_bytes,
    at_length,
    count_macs,
    count_parameters,
    fixed_threads,
    gpu_timings,
    large_batch,
    latency_ms,
    layer_sparsity,
    model_bytes,
    noisy_accuracy,
    throughput_sps,
)
from shrinkflow.core.runtime import CPU, Runtime, on_device, placement
from shrinkflow.core.training import predict_split, reader

if TYPE_CHECKING:
    from shrinkflow.core.export import Exported

__all__ = ["evaluate_artifact", "evaluate_onnx", "with_compression_ratio"]


def evaluate_artifact(
    artifact: ModelArtifact,
    test: Split,
    cfg: MeasureConfig,
    teacher: ModelArtifact | None = None,
    runtime: Runtime = CPU,
) -> dict[str, Any]:
    """Accuracy, robustness, agreement with the teacher, counts, sparsity, size and CPU speed.

    ``artifact_bytes`` is the length of exactly what the artifact dataset writes to disk;
    ``packed_bytes`` the length of its packed form (sparse relative indices, codebooks, Huffman
    coding: :mod:`shrinkflow.core.packing`), which reloads to the same predictions.
    ``macs`` / ``macs_nonzero``: multiply-accumulates per sample (dense / with non-zero weights);
    ``accuracy_noise_<sigma>``: accuracy with Gaussian input noise; ``teacher_agreement``: the share
    of test predictions equal to the teacher's; ``top5_accuracy`` when there are more than 5 classes.
    ``peak_memory_bytes`` = ``model_memory_bytes`` (weights as held in memory, int8 where packed)
    + ``activation_peak_bytes`` (one forward pass at the throughput batch). Timings run on
    ``cfg.threads`` threads. The test set is read batch by batch; accuracies are computed on
    ``runtime.device`` (int8 models on the CPU, which has their kernels); on a GPU,
    ``gpu_latency_b1_ms`` and ``gpu_throughput_b<batch>_sps`` are added beside the CPU timings.
    """
    with fixed_threads(cfg.threads):
        return _evaluate(artifact, test.for_eval(), cfg, teacher, runtime)


def _evaluate(
    artifact: ModelArtifact, test: Split, cfg: MeasureConfig, teacher: ModelArtifact | None, runtime: Runtime
) -> dict[str, Any]:
    model = artifact.model.eval()
    labels = test.y
    device = placement(model, runtime.device)
    batches = reader(test, cfg.eval_batch_size)  # one reader for every pass: its workers persist
    with on_device(model, device=device):
        logits = predict_split(model, batches)
        noisy = {
            f"accuracy_noise_{sigma:g}": noisy_accuracy(model, batches, sigma) for sigma in cfg.noise_sigmas
        }
        gpu = gpu_timings(model, test, cfg) if device.type == "cuda" else {}
    accuracy = int((logits.argmax(1) == labels).sum()) / len(test)
    samples = _timing_samples(test.head(cfg.throughput_batch), cfg)
    sample = samples[0][1]
    total, nonzero = count_parameters(model)
    macs, macs_nonzero = count_macs(model, sample)
    p50, p95 = latency_ms(model, sample, cfg)
    weights = model_bytes(model)
    activations = activation_peak_bytes(model, large_batch(sample, cfg.throughput_batch))
    metrics: dict[str, Any] = {
        "accuracy": accuracy,
        "loss": float(F.cross_entropy(logits, labels)),
    }
    if test.num_classes > 5:
        top5 = logits.topk(5, dim=1).indices
        metrics["top5_accuracy"] = int((top5 == labels[:, None]).any(1).sum()) / len(test)
    metrics.update(noisy)
    if teacher is not None:
        if teacher is artifact:
            reference = logits
        else:
            with on_device(teacher.model, device=placement(teacher.model, runtime.device)):
                reference = predict_split(teacher.model.eval(), batches)
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
            f"throughput_b{cfg.throughput_batch}_sps": throughput_sps(model, sample, cfg),
            "model_memory_bytes": weights,
            "activation_peak_bytes": activations,
            "peak_memory_bytes": weights + activations,
            "threads": cfg.threads,
            "test_samples": len(test),
            **gpu,
        }
    )
    metrics.update(_per_length(model, samples, cfg, metrics))
    return metrics


def _timing_samples(head: torch.Tensor, cfg: MeasureConfig) -> list[tuple[str, torch.Tensor]]:
    """The inputs speed is measured on: the test head itself, or for token ids the head at each of
    ``cfg.sequence_lengths`` (suffix ``_len<L>``)."""
    if head.dtype.is_floating_point or head.ndim != 2:
        return [("", head)]
    return [(f"_len{n}", at_length(head, n)) for n in cfg.sequence_lengths]


def _per_length(
    model: Any, samples: list[tuple[str, torch.Tensor]], cfg: MeasureConfig, first: dict[str, Any]
) -> dict[str, Any]:
    """Latency, throughput (and MACs, if ``first`` has them) at each fixed sequence length of
    token-id data (``latency_b1_len32_p50_ms``...); the first length's figures are the unsuffixed
    ones already measured (``first``)."""
    if not samples[0][0]:
        return {}
    names = {
        "latency_b1_p50_ms": "latency_b1{}_p50_ms",
        "latency_b1_p95_ms": "latency_b1{}_p95_ms",
        f"throughput_b{cfg.throughput_batch}_sps": f"throughput_b{cfg.throughput_batch}{{}}_sps",
        "macs": "macs{}",
    }
    out: dict[str, Any] = {}
    for i, (suffix, sample) in enumerate(samples):
        values = first
        if i:
            p50, p95 = latency_ms(model, sample, cfg)
            values = {
                "latency_b1_p50_ms": p50,
                "latency_b1_p95_ms": p95,
                f"throughput_b{cfg.throughput_batch}_sps": throughput_sps(model, sample, cfg),
            }
            if "macs" in first:
                values["macs"] = count_macs(model, sample)[0]
        out.update({names[k].format(suffix): v for k, v in values.items() if k in names})
    return out


def evaluate_onnx(
    exported: Exported, artifact: ModelArtifact, test: Split, cfg: MeasureConfig
) -> dict[str, Any]:
    """The exported model in ONNX Runtime beside the PyTorch model it came from: accuracy,
    ``agreement`` (share of test predictions equal to PyTorch's), size, latency and throughput,
    both runtimes timed the same way on ``cfg.threads`` threads."""
    from shrinkflow.core.export import OnnxModel

    session = OnnxModel(exported.data, threads=cfg.threads)
    test = test.for_eval()
    with fixed_threads(cfg.threads):
        batches = reader(test, cfg.eval_batch_size)
        reference = predict_split(artifact.model.eval(), batches).argmax(1)
        predicted = torch.cat([session.predict(xb, cfg.eval_batch_size).argmax(1) for xb, _ in batches])
        samples = _timing_samples(test.head(cfg.throughput_batch), cfg)
        sample = samples[0][1]
        p50, p95 = latency_ms(session, sample, cfg)
        throughput = throughput_sps(session, sample, cfg)
        lengths = _per_length(
            session,
            samples,
            cfg,
            {
                "latency_b1_p50_ms": p50,
                "latency_b1_p95_ms": p95,
                f"throughput_b{cfg.throughput_batch}_sps": throughput,
            },
        )
    return {
        "format": exported.format,
        "qparams": exported.qparams,
        "onnx_bytes": len(exported.data),
        "accuracy": int((predicted == test.y).sum()) / len(test),
        "agreement": int((predicted == reference).sum()) / len(test),
        "disagreements": int((predicted != reference).sum()),
        "latency_b1_p50_ms": p50,
        "latency_b1_p95_ms": p95,
        f"throughput_b{cfg.throughput_batch}_sps": throughput,
        **lengths,
        "threads": cfg.threads,
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
