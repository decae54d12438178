"""Training curves: the per-stage history table (DVC's plot file) and the side-by-side figure of
`compare --curves` (read from a real MLflow server in test_mlflow_server.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from shrinkflow.curves import COLUMNS, curves_figure, history_table, plot_curves


def _epoch(epoch: int, loss: float, val: float | None = 0.9, lr: float | None = 0.01) -> dict:
    return {
        "epoch": epoch,
        "loss": loss,
        "train_accuracy": 1 - loss / 4,
        "val_accuracy": val,
        "val_loss": None if val is None else 1 - val,
        "lr": lr,
        "extra": {},
    }


def test_the_table_numbers_steps_across_a_stage_that_trained_several_times():
    # a gradual schedule: two fine-tunes of two epochs, each counting its epochs from 1
    record = {"stage": "prune", "history": [_epoch(1, 0.8), _epoch(2, 0.5), _epoch(1, 0.6), _epoch(2, 0.4)]}
    table = history_table(record)
    assert list(table.columns) == COLUMNS
    assert table["step"].tolist() == [1, 2, 3, 4] and table["epoch"].tolist() == [1, 2, 1, 2]
    assert table["train_loss"].tolist() == [0.8, 0.5, 0.6, 0.4]
    assert table["val_loss"].tolist() == pytest.approx([0.1] * 4)


@pytest.mark.parametrize(
    "record", [{"stage": "quantize", "status": "skipped"}, {"method": "checkpoint"}, {"history": []}]
)
def test_a_stage_that_trained_nothing_gives_the_columns_and_no_rows(record, tmp_path: Path):
    table = history_table(record)
    assert list(table.columns) == COLUMNS and len(table) == 0
    table.to_csv(tmp_path / "h.csv", index=False)  # what the catalog writes: a header DVC reads
    assert (tmp_path / "h.csv").read_text().strip() == ",".join(COLUMNS)


def _run(scale: float, epochs: int) -> pd.DataFrame:
    steps = range(1, epochs + 1)
    return pd.DataFrame(
        {
            "step": list(steps),
            "train_loss": [scale / s for s in steps],
            "val_loss": [scale / s + 0.1 for s in steps],
            "val_accuracy": [1 - 0.5 / s for s in steps],
            "lr": [0.01 * (1 + math.cos(math.pi * (s - 1) / epochs)) / 2 for s in steps],
        }
    )


HISTORIES = {
    "agp+soft_kd (1a2b)": {"teacher": _run(2.0, 5), "pruned": _run(1.0, 3)},
    "magnitude+hidden_kd (3c4d)": {"teacher": _run(2.5, 5), "distilled": _run(1.2, 4)},
    "none (5e6f)": {"teacher": _run(2.2, 5)},
}


def test_the_figure_has_a_row_per_trained_stage_a_column_per_curve_and_every_run_once():
    fig = curves_figure(HISTORIES, ["teacher", "pruned", "distilled", "quantized"])
    titles = [ax.get_title() for ax in fig.axes]
    curves = ["training loss", "validation loss", "validation accuracy", "learning rate"]
    # quantized trained in no run: no row for it
    assert titles == [f"{stage}: {curve}" for stage in ("teacher", "pruned", "distilled") for curve in curves]
    teacher_accuracy = fig.axes[2]
    assert [line.get_label() for line in teacher_accuracy.get_lines()] == list(HISTORIES)
    assert teacher_accuracy.get_lines()[1].get_ydata().tolist() == _run(2.5, 5)["val_accuracy"].tolist()
    assert [line.get_label() for line in fig.axes[4].get_lines()] == ["agp+soft_kd (1a2b)"]  # pruned
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(HISTORIES)


def test_a_curve_no_run_logged_gets_no_column(tmp_path: Path):
    histories = {name: {"teacher": _run(1.0, 3).drop(columns=["lr"])} for name in ("a", "b")}
    fig = curves_figure(histories, ["teacher"])
    assert [ax.get_title() for ax in fig.axes] == [
        "teacher: training loss",
        "teacher: validation loss",
        "teacher: validation accuracy",
    ]
    path = plot_curves(histories, tmp_path / "out" / "curves.png", ["teacher"])
    assert path.stat().st_size > 10_000


def test_runs_without_curves_are_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match=r"none of the runs \['old'\] logged per-epoch curves"):
        plot_curves({"old": {}}, tmp_path / "c.png", ["teacher"])
    assert not (tmp_path / "c.png").exists()
