"""Training curves: each training stage's per-epoch history as a table (the DVC plot files,
``data/08_reporting/history/<stage>.csv``), and the curves of several MLflow runs side by side
(``kedro shrinkflow compare --curves``).

A stage's record (``<stage>_record``) holds the epochs of every training its method ran, in order;
a method that trains more than once (a gradual pruning schedule's fine-tunes, iterative head
pruning) restarts ``epoch`` at 1 each time, so ``step`` numbers them across the stage, the same
step MLflow's per-epoch metrics carry (:class:`shrinkflow.hooks.tracking.TrackingHook`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["COLUMNS", "CURVES", "curves_figure", "history_table", "load_curves", "plot_curves"]

#: the table's columns: ``train_loss`` is the objective the stage trained (for a distiller, its
#: distillation loss), ``val_loss`` the cross-entropy on the validation split
COLUMNS = ["step", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"]
#: what ``compare --curves`` draws, one panel each: (metric suffix, axis label)
CURVES = (
    ("train_loss", "training loss"),
    ("val_loss", "validation loss"),
    ("val_accuracy", "validation accuracy"),
    ("lr", "learning rate"),
)


def history_table(record: dict[str, Any]) -> pd.DataFrame:
    """The per-epoch table of a stage's record: one row per epoch, ``COLUMNS`` (no rows when the
    stage trained nothing: a checkpoint teacher, a post-training method, ``none``)."""
    rows = []
    for step, entry in enumerate(record.get("history") or [], start=1):
        row = {"step": step, **{k: entry.get(k) for k in COLUMNS[1:]}, "train_loss": entry.get("loss")}
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def load_curves(
    tracking_uri: str, runs: dict[str, str], stages: Sequence[str]
) -> dict[str, dict[str, pd.DataFrame]]:
    """The per-epoch step metrics (``<stage>.<curve>``) of ``runs`` (label -> run id) read back
    from MLflow: label -> stage -> a table with ``step`` and one column per curve it logged."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for label, run_id in runs.items():
        out[label] = {}
        for stage in stages:
            series = {}
            for key, _ in CURVES:
                points = client.get_metric_history(run_id, f"{stage}.{key}")
                if points:
                    series[key] = pd.Series({p.step: p.value for p in points}, dtype="float64")
            if series:
                table = pd.DataFrame(series).sort_index()
                out[label][stage] = table.rename_axis("step").reset_index()
    return out


def plot_curves(histories: dict[str, dict[str, pd.DataFrame]], path: Path, stages: Sequence[str]) -> Path:
    """:func:`curves_figure` written to ``path`` (PNG)."""
    fig = curves_figure(histories, stages)
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def curves_figure(histories: dict[str, dict[str, pd.DataFrame]], stages: Sequence[str]) -> Any:
    """One row of panels per model stage (``teacher``, ``pruned``...) that any run trained, one
    column per curve of :data:`CURVES` that any run logged; each run a line of its own colour in
    every panel. ``histories``: run label -> model stage -> a table with ``step`` and the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in stages if any(s in h and len(h[s]) for h in histories.values())]
    columns = [
        (key, label)
        for key, label in CURVES
        if any(key in h[s] and h[s][key].notna().any() for h in histories.values() for s in rows if s in h)
    ]
    if not rows or not columns:
        raise ValueError(
            f"none of the runs {sorted(histories)} logged per-epoch curves for {list(stages)}; "
            "expected MLflow step metrics such as teacher.val_accuracy (runs made before they were logged have none)"
        )
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(3.6 * len(columns), 2.8 * len(rows)), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, stage in enumerate(rows):
        for j, (key, label) in enumerate(columns):
            ax = axes[i][j]
            for k, (run, history) in enumerate(histories.items()):
                table = history.get(stage)
                if table is None or key not in table or table[key].isna().all():
                    continue
                ax.plot(
                    table["step"], table[key], marker="o", ms=3, color=colours[k % len(colours)], label=run
                )
            ax.set_title(f"{stage}: {label}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for row in axes:
        for ax in row:  # every run, once, even when the first panel lacks one
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                if label not in labels:
                    handles.append(handle)
                    labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(labels) <= 4 else 0.1, 1, 1))
    return fig
