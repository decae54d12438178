"""One trial: the recipe's three stages run as ``kedro run`` runs them, then measured on the
validation split and, when asked, on the runtime it is deployed on (ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shrinkflow.core import artifact as artifacts
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split, calibration_batches
from shrinkflow.core.evaluation import evaluate_artifact, evaluate_onnx
from shrinkflow.core.export import ExportConfig, export_artifact
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.training import evaluate, node_seed, seed_everything
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage, distill, run_method

__all__ = ["Hopeless", "build_recipe", "listen", "measure_split", "notify", "run_recipe", "runtime_metrics"]

_listeners: list[Callable[[str, dict[str, Any]], None]] = []


@contextmanager
def listen(callback: Callable[[str, dict[str, Any]], None]) -> Iterator[None]:
    """Call ``callback(event, info)`` while the block runs: ``("trial", {number, state, params,
    metrics, values, seconds})`` after each trial this worker runs (metrics named ``val.<metric>``)."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def notify(event: str, info: dict[str, Any]) -> None:
    for callback in list(_listeners):
        callback(event, info)


class Hopeless(Exception):
    """The recipe is stopped after distillation: too far below the teacher, or a pruner said so."""


def _roundtrip(model: ModelArtifact) -> ModelArtifact:
    """What the next node loads from the catalog's file."""
    return artifacts.from_bytes(artifacts.to_bytes(model))


def build_recipe(
    params: dict[str, Any],
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    seed: int,
    checkpoint: Callable[[float], None] | None = None,
) -> tuple[ModelArtifact, dict[str, float]]:
    """(the final model, validation accuracy after each stage) of the recipe ``params``
    (``{prune: ..., distill: ..., quantize: ...}`` blocks), seeded like ``kedro run``: the same
    recipe and seed give the same model. ``checkpoint(validation accuracy)`` runs after
    distillation, before quantization; it raises :class:`Hopeless` to stop the recipe there."""
    prune_cfg = PruneStage(**params["prune"])
    distill_cfg = DistillStage(**params["distill"])
    quantize_cfg = QuantizeStage(**params["quantize"])
    progress: dict[str, float] = {}
    seed_everything(node_seed(seed, "prune"))
    pruned = _roundtrip(run_method(prune_cfg, teacher, train, val, train_cfg=prune_cfg.finetune)[0])
    seed_everything(node_seed(seed, "distill"))
    distilled = _roundtrip(distill(teacher, pruned, train, val, distill_cfg)[0])
    progress["distilled"] = evaluate(distilled.model, val)[0]
    if checkpoint is not None:
        checkpoint(progress["distilled"])
    seed_everything(node_seed(seed, "quantize"))
    quantized = _roundtrip(
        run_method(quantize_cfg, distilled, train, val, train_cfg=quantize_cfg.finetune, teacher=teacher)[0]
    )
    return quantized, progress


def measure_split(
    model: ModelArtifact,
    data: Split,
    measure: MeasureConfig,
    teacher: ModelArtifact,
    seed: int,
    node: str = "quantized.evaluate",
) -> dict[str, float]:
    """The numeric metrics of :func:`evaluate_artifact` on ``data``, seeded as the pipeline's
    evaluation ``node`` is (so the test figures equal those of ``kedro run`` with the recipe)."""
    seed_everything(node_seed(seed, node))
    metrics = evaluate_artifact(model, data, measure, teacher=teacher)
    return {
        k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def runtime_metrics(
    model: ModelArtifact, train: Split, val: Split, measure: MeasureConfig, export: ExportConfig
) -> dict[str, float]:
    """The trial's model on its deployment runtime: exported as ``export`` configures it (int8
    QDQ for a quantized model unless ``format: float``) and run by ONNX Runtime on
    ``measure.threads`` threads. ``onnx_latency_b1_ms`` (median), ``onnx_throughput_sps`` at
    ``measure.throughput_batch`` and ``onnx_agreement`` with the PyTorch model on validation."""
    calibration = list(calibration_batches(train, export.calibration_batches, export.batch_size))
    exported = export_artifact(model, val.for_eval().head(2), calibration, export)
    onnx = evaluate_onnx(exported, model, val, measure)  # the export stage's own measurement
    return {
        "onnx_latency_b1_ms": onnx["latency_b1_p50_ms"],
        "onnx_throughput_sps": onnx[f"throughput_b{measure.throughput_batch}_sps"],
        "onnx_agreement": onnx["agreement"],
        "onnx_bytes": float(onnx["onnx_bytes"]),
    }


def run_recipe(
    params: dict[str, Any],
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    data: Split,
    measure: MeasureConfig,
    seed: int,
) -> dict[str, float]:
    """The recipe's final model, built by :func:`build_recipe`, measured on ``data``."""
    model, _ = build_recipe(params, teacher, train, val, seed)
    return measure_split(model, data, measure, teacher, seed)
