"""Comparing runs: the Pareto front and the per-stage table (MLflow itself in test_mlflow_server.py)."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pandas as pd
import pytest

from shrinkflow.compare import (
    by_stage,
    load_runs,
    one_dataset,
    pareto_figure,
    pareto_front,
    plot_pareto,
    stage_points,
)


def brute_force(size: list[float], acc: list[float]) -> list[bool]:
    n = len(size)
    return [
        not any(
            size[j] <= size[i] and acc[j] >= acc[i] and (size[j] < size[i] or acc[j] > acc[i])
            for j in range(n)
        )
        for i in range(n)
    ]


def test_pareto_front_on_a_hand_made_case():
    size = [100.0, 50.0, 50.0, 10.0, 80.0, 10.0]
    acc = [0.99, 0.98, 0.97, 0.90, 0.985, 0.90]
    # 50/0.97 is beaten by 50/0.98; 80/0.985 is kept (more accurate than anything smaller);
    # the two identical 10/0.90 points are both kept.
    assert pareto_front(size, acc) == [True, True, False, True, True, True]


@pytest.mark.parametrize("seed", range(20))
def test_pareto_front_matches_the_definition(seed: int):
    rng = random.Random(seed)
    size = [float(rng.randint(1, 8)) for _ in range(30)]
    acc = [rng.randint(0, 6) / 6 for _ in range(30)]
    assert pareto_front(size, acc) == brute_force(size, acc)


def test_pareto_front_of_nothing_is_empty():
    assert pareto_front([], []) == []


def runs_frame() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": "a" * 32,
                "run_name": "agp+soft_kd+weight_sharing",
                "user": "ann",
                "dvc_exp": None,
                "teacher.accuracy": 0.98,
                "teacher.packed_bytes": 1_000_000.0,
                "quantized.accuracy": 0.979,
                "quantized.packed_bytes": 25_000.0,
            },
            {
                "run_id": "b" * 32,
                "run_name": "magnitude+none+dynamic_int8",
                "user": "bob",
                "dvc_exp": "exp-1",
                "teacher.accuracy": 0.98,
                "teacher.packed_bytes": 1_000_000.0,
                "quantized.accuracy": 0.975,
                "quantized.packed_bytes": 90_000.0,
            },
        ]
    )


def test_by_stage_gives_one_row_per_run_and_stage_with_integer_sizes():
    table = by_stage(runs_frame(), ["accuracy", "packed_bytes"], ["teacher", "quantized"])
    assert len(table) == 4
    assert list(table["stage"]) == ["teacher", "quantized", "teacher", "quantized"]
    assert str(table["packed_bytes"].dtype) == "Int64"
    assert table.loc[1, "packed_bytes"] == 25_000 and table.loc[3, "user"] == "bob"


def test_stage_points_mark_the_front_and_the_plot_is_written(tmp_path: Path):
    points = stage_points(runs_frame(), "packed_bytes", ["teacher", "quantized"])
    front = points[points["pareto"]]
    # bob's int8 model (90 KB, 0.975) is beaten by ann's 25 KB at 0.979; both teachers tie at the top.
    assert sorted(zip(front["run_name"], front["stage"], strict=True)) == [
        ("agp+soft_kd+weight_sharing", "quantized"),
        ("agp+soft_kd+weight_sharing", "teacher"),
        ("magnitude+none+dynamic_int8", "teacher"),
    ]
    path = plot_pareto(points, "packed_bytes", tmp_path / "plot" / "compare.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_load_runs_keeps_complete_runs_counts_skipped_stages_and_pages_past_partial_ones(tmp_path: Path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("shrinkflow", artifact_location=(tmp_path / "a").as_uri())
    full = {
        f"{s}.{m}": v
        for s in ("teacher", "pruned", "distilled", "quantized")
        for m, v in (("accuracy", 0.97), ("packed_bytes", 1000.0))
    }

    def run(name: str, metrics: dict, tags: dict | None = None, t: int = 0) -> str:
        r = client.create_run(exp, run_name=name, tags=tags or {}, start_time=1_000_000 + t)
        for key, value in metrics.items():
            client.log_metric(r.info.run_id, key, value)
        client.set_terminated(r.info.run_id)
        return r.info.run_id

    run("old-full", full, {"dataset": "digits"}, t=0)
    no_prune = {k: v for k, v in full.items() if not k.startswith("pruned.")}
    run("skipped-prune", no_prune, {"method.prune": "none"}, t=1)
    for i in range(3):  # newer single-stage runs, as `dvc repro` makes
        run(f"evaluate@teacher-{i}", {"teacher.accuracy": 0.97}, t=10 + i)
    runs = load_runs(uri, metrics=["accuracy", "packed_bytes"], max_runs=2)
    assert list(runs["run_name"]) == ["skipped-prune", "old-full"]
    assert pd.isna(runs.loc[0, "pruned.accuracy"]) and runs.loc[1, "quantized.packed_bytes"] == 1000.0
    assert pd.isna(runs.loc[0, "dataset"]) and runs.loc[1, "dataset"] == "digits"  # the `dataset` tag
    partial = load_runs(uri, max_runs=10, partial=True)
    assert len(partial) == 5
    assert list(load_runs(uri, tags={"method.prune": "none"})["run_name"]) == ["skipped-prune"]
    with pytest.raises(
        LookupError, match=r"no MLflow experiment 'other' .* experiments there: \['Default', 'shrinkflow'\]"
    ):
        load_runs(uri, "other")


def crowded_runs(n_runs: int = 6) -> pd.DataFrame:
    """``n_runs`` runs whose quantized models all lie on the front, within 2% of size and 0.5 pts."""
    return pd.DataFrame(
        [
            {
                "run_id": f"{i:032d}",
                "run_name": f"recipe-{i}",
                "user": "ann",
                "dvc_exp": None,
                "teacher.accuracy": 0.98,
                "teacher.packed_bytes": 340_353.0 + 10 * i,
                "quantized.accuracy": 0.970 + 0.001 * i,
                "quantized.packed_bytes": 30_000.0 + 120 * i,
            }
            for i in range(n_runs)
        ]
    )


def text_boxes(fig) -> list:
    """The labels' own boxes on screen (without leader lines), once drawn as saving does."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    return [Text.get_window_extent(t, renderer) for t in fig.axes[0].texts]


def test_compare_plot_labels_each_front_point_once_without_collisions():
    points = stage_points(crowded_runs(), "packed_bytes", ["teacher", "quantized"])
    front = points[points["pareto"]]
    assert len(front) == 7  # the six quantized models and the first run's teacher
    fig = pareto_figure(points, "packed_bytes")
    (ax,) = fig.axes
    boxes = text_boxes(fig)
    assert sorted(t.get_text() for t in ax.texts) == sorted(front["run_name"])
    pairs = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]]
    assert not any(a.overlaps(b) for a, b in pairs)
    frame = ax.get_window_extent()
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)
    marks = ax.transData.transform(list(zip(points["size"], 100 * points["accuracy"], strict=True)))
    assert not any(b.contains(x, y) for b in boxes for x, y in marks)  # no label hides a point
    ticks = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    texts = [t.get_text() for t in ticks]
    assert texts == ["30 kB", "100 kB", "300 kB"]
    assert not any(
        a.get_window_extent().overlaps(b.get_window_extent()) for a, b in itertools.pairwise(ticks)
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["teacher", "quantized", "Pareto front"]


def test_compare_plot_of_one_run_names_stages_by_marker_only():
    points = stage_points(runs_frame().iloc[:1], "packed_bytes", ["teacher", "quantized"])
    fig = pareto_figure(points, "packed_bytes")
    text_boxes(fig)
    (ax,) = fig.axes
    assert len(ax.texts) == 0  # one run: its name on every point would say nothing
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    assert labels == ["30 kB", "100 kB", "300 kB", "1 MB"]


def test_one_dataset_keeps_the_newest_runs_data_set_and_names_the_others():
    runs = pd.concat([runs_frame(), runs_frame()], ignore_index=True)
    runs["dataset"] = ["mnist", "digits", "mnist", None]
    kept, note = one_dataset(runs)
    assert list(kept.index) == [0, 1] and list(kept["dataset"]) == ["mnist", "mnist"]
    assert note == (
        "the runs are on 3 data sets; comparing the 2 on 'mnist' (the newest run's) and leaving out "
        "'digits' (1), 'unknown' (1): accuracies on different data sets are not comparable. "
        "--tag dataset=NAME picks one."
    )
    # one data set, or none recorded at all: everything is kept, nothing to say
    same = runs.assign(dataset="mnist")
    assert one_dataset(same)[0].equals(same) and one_dataset(same)[1] is None
    assert one_dataset(runs_frame())[1] is None
