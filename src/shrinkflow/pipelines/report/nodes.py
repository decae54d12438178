"""Report node."""

from __future__ import annotations

from typing import Any

import pandas as pd

from shrinkflow.report import accuracy_size_figure, build_report, latency_figure, sparsity_figure
from shrinkflow.stages import MODELS, GateStage
from shrinkflow.validation.frames import quality_table


def quality_gates(
    teacher: dict[str, Any],
    pruned: dict[str, Any],
    distilled: dict[str, Any],
    quantized: dict[str, Any],
    cfg: GateStage,
) -> pd.DataFrame:
    """One row per stage (accuracy drop versus the teacher, size, sparsity) for the
    ``quality_gates`` suite, which the catalog runs when this table is saved."""
    metrics = dict(zip(MODELS, (teacher, pruned, distilled, quantized), strict=True))
    return quality_table(metrics, final=cfg.final)


def report(
    teacher: dict[str, Any],
    pruned: dict[str, Any],
    distilled: dict[str, Any],
    quantized: dict[str, Any],
    teacher_record: dict[str, Any],
    prune_record: dict[str, Any],
    distill_record: dict[str, Any],
    quantize_record: dict[str, Any],
    gates: pd.DataFrame,
    onnx: dict[str, Any],
    deployment: dict[str, Any],
) -> tuple[dict[str, Any], str, pd.DataFrame, Any, Any, Any]:
    """metrics.json (by stage, the ONNX export and the deployment's runtimes), a Markdown table, a
    CSV and the plots."""
    document, markdown, table = build_report(
        {"teacher": teacher, "pruned": pruned, "distilled": distilled, "quantized": quantized},
        {
            "teacher": teacher_record,
            "pruned": prune_record,
            "distilled": distill_record,
            "quantized": quantize_record,
        },
        gates,
        onnx,
        deployment,
    )
    return (
        document,
        markdown,
        table,
        accuracy_size_figure(document),
        latency_figure(document),
        sparsity_figure(document),
    )
