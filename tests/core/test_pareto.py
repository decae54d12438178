"""The Pareto front against its definition: 2-D and 3-D, duplicates, NaN, mixed directions."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from shrinkflow.core.pareto import pareto_mask


def brute_force(points: list[tuple[float, ...]], directions: list[str]) -> list[bool]:
    """The definition, one pair at a time: better means larger when maximized, smaller when minimized."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]

    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(sign, a, b, strict=True)]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    usable = [not any(math.isnan(v) for v in p) for p in points]
    return [
        usable[i] and not any(usable[j] and dominates(points[j], points[i]) for j in range(len(points)))
        for i in range(len(points))
    ]


def random_points(seed: int, n: int, d: int, levels: int = 6) -> list[tuple[float, ...]]:
    """Values on a coarse grid, so ties and exact duplicates are common."""
    rng = np.random.default_rng(seed)
    return [tuple(float(v) for v in row) for row in rng.integers(0, levels, (n, d)) / levels]


def test_a_hand_made_accuracy_size_front():
    # (size in bytes, accuracy): 50/0.97 is beaten by 50/0.98; 80/0.985 stays (more accurate than
    # anything smaller); 120/0.98 is beaten by 100/0.99; the two 10/0.90 points are both kept.
    points = [(100, 0.99), (50, 0.98), (50, 0.97), (10, 0.90), (80, 0.985), (10, 0.90), (120, 0.98)]
    assert pareto_mask(points, ["minimize", "maximize"]) == [True, True, False, True, True, True, False]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("directions", [["minimize", "maximize"], ["maximize", "maximize"]])
def test_two_objectives_match_the_definition(seed: int, directions: list[str]):
    points = random_points(seed, 40, 2)
    mask = pareto_mask(points, directions)
    assert mask == brute_force(points, directions)
    assert any(mask)  # a finite set always has a front


@pytest.mark.parametrize("seed", range(10))
def test_three_objectives_with_mixed_directions_match_the_definition(seed: int):
    # e.g. accuracy up, bytes down, latency down
    directions = ["maximize", "minimize", "minimize"]
    points = random_points(100 + seed, 60, 3)
    assert pareto_mask(points, directions) == brute_force(points, directions)


def test_continuous_values_in_three_dimensions_match_the_definition():
    rng = np.random.default_rng(7)
    points = [tuple(row) for row in rng.normal(size=(300, 3)).tolist()]
    directions = ["minimize", "maximize", "minimize"]
    mask = pareto_mask(points, directions)
    assert mask == brute_force(points, directions)
    assert 5 < sum(mask) < 150


def test_the_direction_decides_the_front():
    points = [(1.0, 1.0), (2.0, 2.0), (1.0, 2.0), (2.0, 1.0)]
    assert pareto_mask(points, ["maximize", "maximize"]) == [False, True, False, False]
    assert pareto_mask(points, ["minimize", "minimize"]) == [True, False, False, False]
    assert pareto_mask(points, ["minimize", "maximize"]) == [False, False, True, False]
    assert pareto_mask(points, ["maximize", "minimize"]) == [False, False, False, True]


def test_exact_duplicates_of_a_front_point_are_all_kept_and_of_a_dominated_one_none():
    points = [(0.9, 10.0), (0.9, 10.0), (0.9, 10.0), (0.8, 20.0), (0.8, 20.0)]
    assert pareto_mask(points, ["maximize", "minimize"]) == [True, True, True, False, False]


def test_a_tie_on_one_objective_is_broken_by_the_other():
    points = [(0.95, 100.0), (0.95, 90.0), (0.97, 100.0)]
    assert pareto_mask(points, ["maximize", "minimize"]) == [False, True, True]


def test_nan_points_are_never_on_the_front_and_never_dominate():
    nan = float("nan")
    # (nan, 0) would beat everything on size if it counted; (1.0, nan) would beat everything on accuracy
    points = [(nan, 0.0), (0.90, 50.0), (1.0, nan), (0.80, 60.0), (0.95, 70.0)]
    assert pareto_mask(points, ["maximize", "minimize"]) == [False, True, False, False, True]
    assert pareto_mask([(nan, nan)], ["maximize", "minimize"]) == [False]


def test_infinities_compare_as_numbers():
    inf = float("inf")
    points = [(0.9, inf), (0.8, 10.0), (0.9, 20.0)]
    assert pareto_mask(points, ["maximize", "minimize"]) == [False, True, True]


def test_a_single_point_and_no_points():
    assert pareto_mask([(0.5, 3.0)], ["maximize", "minimize"]) == [True]
    assert pareto_mask([], ["maximize", "minimize"]) == []


def test_a_numpy_array_works_like_a_list():
    rng = np.random.default_rng(3)
    values = rng.random((700, 2))
    mask = pareto_mask(values, ["minimize", "maximize"])
    assert mask == pareto_mask(values.tolist(), ["minimize", "maximize"])
    assert mask == brute_force([tuple(p) for p in values.tolist()], ["minimize", "maximize"])


def test_a_few_thousand_points_all_on_the_front_take_under_a_second():
    # the worst case: nothing is dominated, so every point is compared with every earlier one
    size = np.linspace(1.0, 2.0, 2000)
    mask = pareto_mask(np.c_[size, size], ["minimize", "maximize"])
    assert all(mask)
    start = time.perf_counter()
    pareto_mask(np.random.default_rng(0).random((3000, 3)), ["minimize", "maximize", "minimize"])
    assert time.perf_counter() - start < 2.0  # ~0.05 s on one core; generous for a shared machine


@pytest.mark.parametrize(
    ("points", "directions", "message"),
    [
        (
            [(1.0, 2.0)],
            ["maximise", "minimize"],
            r"one or more of \('maximize', 'minimize'\), got \['maximise'",
        ),
        ([(1.0, 2.0)], [], r"got \[\]"),
        ([(1.0, 2.0, 3.0)], ["maximize", "minimize"], r"needs 2 objective\(s\).*shape \(1, 3\)"),
    ],
)
def test_bad_directions_or_shapes_name_the_value(points, directions, message):
    with pytest.raises(ValueError, match=message):
        pareto_mask(points, directions)
