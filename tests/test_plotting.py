"""Size axes people can read: kB/MB labels that say each tick exactly, few ticks that never overlap,
and a label placer that keeps labels off each other and off the points."""

from __future__ import annotations

import itertools

import pytest

from shrinkflow.plotting import place_labels, size_axis, size_labels, size_ticks


def test_size_labels_use_decimal_units_with_the_fewest_decimals_that_are_exact():
    assert size_labels([30_000, 40_000]) == ["30 kB", "40 kB"]
    assert size_labels([1_000_000, 1_500_000, 2_000_000]) == ["1.0 MB", "1.5 MB", "2.0 MB"]
    assert size_labels([343_000, 343_500]) == ["343.0 kB", "343.5 kB"]  # never 343 / 344 kB
    assert size_labels([750e6, 1e9, 1.25e9]) == ["750 MB", "1.00 GB", "1.25 GB"]  # per unit
    assert size_labels([500, 1000]) == ["500 B", "1 kB"]
    assert size_labels([34_000, 1_200_000], unit="") == ["34k", "1.2M"]  # parameter counts


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (20_000, 1_250_000, [30_000, 100_000, 300_000, 1_000_000]),
        (8_000, 2_000_000, [10_000, 100_000, 1_000_000]),
        (330_000, 357_000, [330_000, 340_000, 350_000]),
        (4_200_000, 6_500_000, [4_500_000, 5_000_000, 5_500_000, 6_000_000, 6_500_000]),
        (5_200, 27_500, [7_000, 10_000, 15_000, 20_000]),
    ],
)
def test_size_ticks_are_round_and_few(lo: float, hi: float, expected: list[float]):
    assert size_ticks(lo, hi) == expected


def rendered(sizes: list[float]) -> tuple[list[str], list[float]]:
    """The x tick labels drawn on the narrowest panel the report draws, and the gaps between them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.3, 4.2), layout="constrained")
    ax.scatter(sizes, range(len(sizes)))
    size_axis(ax, sizes)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent() for t in ticks]
    assert ax.get_xticklabels(minor=True) == []
    plt.close(fig)
    return [t.get_text() for t in ticks], [b.x0 - a.x1 for a, b in itertools.pairwise(boxes)]


@pytest.mark.parametrize("low", [700, 34_000, 340_353, 4_420_079, 3e9])
@pytest.mark.parametrize("ratio", [1.001, 1.005, 1.05, 1.4, 2, 3, 5, 8, 30, 300, 1e5])
def test_size_axis_draws_three_to_six_distinct_ticks_apart_at_any_range(low: float, ratio: float):
    labels, gaps = rendered([low, low * ratio])
    assert 3 <= len(labels) <= 6 and len(set(labels)) == len(labels), labels
    assert min(gaps) >= 8, (labels, gaps)  # pixels between neighbouring labels


def test_equal_sizes_get_one_tick_that_says_the_size():
    assert rendered([34_000.0] * 4)[0] == ["34 kB"]


def crowded_labels() -> tuple[list, list, object]:
    """Ten labelled points packed in a row and a band 0.2 points high; the labels and the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = [1.0 + 0.003 * i for i in range(10)], [1.0 + 0.001 * (i % 3) for i in range(10)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(xs, ys)
    ax.set_ylim(0.99, 1.02)
    labels = place_labels(ax, xs, ys, [f"point number {i}" for i in range(10)])
    plt.close(fig)
    return labels, list(zip(xs, ys, strict=True)), fig


def test_place_labels_keeps_labels_apart_off_the_points_and_inside_the_axes():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    labels, points, fig = crowded_labels()
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]
    assert [t.get_text() for t in labels] == [f"point number {i}" for i in range(10)]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    (ax,) = fig.axes
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    assert not any(b.contains(x, y) for b in boxes for x, y in ax.transData.transform(points))
    assert [t.xyann for t in labels] == [t.xyann for t in crowded_labels()[0]]  # deterministic
