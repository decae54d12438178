"""Comparing runs: the Pareto front and the per-stage table (MLflow itself in test_mlflow_server.py)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pytest

from shrinkflow.compare import by_stage, pareto_front, plot_pareto, stage_points


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
    assert not math.isnan(points["size"].sum())
