"""Report node."""

from __future__ import annotations

from typing import Any

import pandas as pd

from shrinkflow.report import accuracy_size_figure, build_report


def report(
    teacher: dict[str, Any],
    pruned: dict[str, Any],
    distilled: dict[str, Any],
    quantized: dict[str, Any],
    prune_record: dict[str, Any],
    distill_record: dict[str, Any],
    quantize_record: dict[str, Any],
) -> tuple[dict[str, Any], str, pd.DataFrame, Any]:
    """metrics.json (by stage), a Markdown table, a CSV and an accuracy-size plot of every stage."""
    document, markdown, table = build_report(
        {"teacher": teacher, "pruned": pruned, "distilled": distilled, "quantized": quantized},
        {"pruned": prune_record, "distilled": distill_record, "quantized": quantize_record},
    )
    return document, markdown, table, accuracy_size_figure(document)
