"""Figures people can read: size axes in kB/MB with few distinct ticks, a marker per stage, labels
that do not collide.

Used by the report's figures (:mod:`shrinkflow.report`) and ``kedro shrinkflow compare``
(:mod:`shrinkflow.compare`). matplotlib is imported inside the functions, as everywhere here.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

__all__ = ["place_labels", "size_axis", "size_labels", "size_ticks", "stage_styles"]

#: Colours and hollow markers, one pair per stage: points of two stages at one spot stay visible.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">")
_PREFIXES = ("", "k", "M", "G", "T")


def stage_styles(stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """A distinct colour and marker per stage, in order (``scatter``/``Line2D`` keywords)."""
    colours = [f"C{i}" for i in range(10)]
    return {
        stage: {"color": colours[i % 10], "marker": _MARKERS[(i + i // 10) % len(_MARKERS)]}
        for i, stage in enumerate(dict.fromkeys(stages))
    }


def size_ticks(lo: float, hi: float) -> list[float]:
    """Three to six round sizes within ``[lo, hi]`` on a log axis, a sixth of it apart or more.

    The first of decades, 1-3-10, 1-2-5 or 1-1.5-2-3-5-7 per decade that gives three; else evenly
    spaced round numbers (a narrow range, where a log axis looks linear): all of them, every other
    one, or, where the log scale crowds the top ones, those left to right that are far enough apart.
    """
    import math

    from matplotlib.ticker import LogLocator, MaxNLocator

    gap = (math.log10(hi) - math.log10(lo)) / 6
    for subs in ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)):
        ticks = [float(t) for t in LogLocator(subs=subs, numticks=6).tick_values(lo, hi) if lo <= t <= hi]
        # within a decade LogLocator hands over to linear ticks: only ticks at ``subs`` count here
        if _apart(ticks, gap) and all(round(t / 10 ** math.floor(math.log10(t)), 6) in subs for t in ticks):
            return ticks
    evenly = [
        [
            float(t)
            for t in MaxNLocator(nbins=bins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
            if lo <= t <= hi
        ]
        for bins in (5, 10)
    ]
    # every tick, else every other one, wherever the top ones (crowded by the log scale) are apart
    for ticks in (t[start::stride] for t in evenly for stride in (1, 2) for start in range(stride)):
        if _apart(ticks, gap):
            return ticks
    thinned = evenly[1][:1]  # else the finer ones, left to right, each far enough from the last kept
    for t in evenly[1][1:]:
        if math.log10(t / thinned[-1]) >= gap:
            thinned.append(t)
    return thinned


def _apart(ticks: Sequence[float], gap: float) -> bool:
    """Three to six ticks, each ``gap`` decades or more past the one before."""
    import math

    return 3 <= len(ticks) <= 6 and all(math.log10(b / a) >= gap for a, b in itertools.pairwise(ticks))


def size_labels(ticks: Sequence[float], unit: str = "B") -> list[str]:
    """``ticks`` in decimal units (``34 kB``, ``1.2 MB``; ``unit=""`` for counts: ``34k``), those of
    one unit with the fewest decimals (the same for them all, at most 3) that write each exactly."""
    scaled = []
    for tick in ticks:
        power = 0
        while abs(tick) >= 1000 and power < len(_PREFIXES) - 1:
            tick, power = tick / 1000, power + 1
        scaled.append((tick, _PREFIXES[power]))
    decimals = {}
    for prefix in dict.fromkeys(p for _, p in scaled):
        values = [v for v, p in scaled if p == prefix]
        exact = (d for d in range(4) if all(abs(round(v, d) - v) <= 1e-9 * max(abs(v), 1) for v in values))
        decimals[prefix] = next(exact, 3)
    sep = " " if unit else ""
    return [f"{v:.{decimals[prefix]}f}{sep}{prefix}{unit}" for v, prefix in scaled]


def size_axis(ax: Any, sizes: Sequence[float], unit: str = "B") -> None:
    """A log x axis over ``sizes`` with few, distinct ticks in kB/MB and no minor tick labels.

    The limits are padded by 6% of the range in log space and at least 2.3% of the size either way,
    so that sizes within a fraction of a percent still get three or more round ticks; equal sizes
    get one, that size.
    """
    import numpy as np
    from matplotlib.ticker import NullLocator

    positive = [float(s) for s in sizes if s > 0]
    if not positive:
        return
    logs = np.log10(positive)
    pad = max(0.06 * float(logs.max() - logs.min()), 0.01)
    lo, hi = 10 ** (float(logs.min()) - pad), 10 ** (float(logs.max()) + pad)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = size_ticks(lo, hi) if len(set(positive)) > 1 else positive[:1]  # all equal: that one size
    ax.set_xticks(ticks, size_labels(ticks, unit))
    ax.xaxis.set_minor_locator(NullLocator())


def place_labels(ax: Any, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str]) -> list[Any]:
    """Annotate the data points ``(xs[i], ys[i])`` with ``texts[i]`` so that no label overlaps another
    label, a point or line plotted on ``ax``, or the axes' edge; call it once the figure is otherwise
    complete. Returns the annotations in the order of ``texts``.

    matplotlib has no label placement, so this is a small greedy one, deterministic: labels are placed
    left to right, each at the free spot nearest its point among a grid of offsets (right, left, above,
    below, then further out, with a leader line), or where it overlaps least if none is free.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    fig = ax.figure
    # pyplot.close leaves a canvas that does not draw: lay out and draw on Agg, as saving does
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # settles the layout, hence where the points are on screen
    renderer = canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = 5 * fig.dpi / 72
    anchors = ax.transData.transform(list(zip(xs, ys, strict=True)))
    marks = [
        *anchors,
        *(xy for c in ax.collections for xy in c.get_offset_transform().transform(c.get_offsets())),
    ]
    taken = [Bbox.from_extents(x - radius, y - radius, x + radius, y + radius) for x, y in marks]
    taken += _segment_boxes(ax)
    spots = sorted(
        ((dx, dy) for dx in (-40, -8, 0, 8, 40) for dy in range(-60, 61, 10) if (dx, dy) != (0, 0)),
        key=lambda o: (o[0] ** 2 + o[1] ** 2, o[0] < 0, o[1] < 0),  # nearest; right, then above, first
    )
    placed: dict[int, Any] = {}
    for i in sorted(range(len(texts)), key=lambda k: (anchors[k][0], anchors[k][1])):
        best: tuple[float, Any] | None = None
        for dx, dy in spots:
            ann = ax.annotate(
                texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.4"} if abs(dx) + abs(dy) > 20 else None,
                annotation_clip=False,
            )  # fmt: skip
            box = _text_box(ann, renderer)
            outside = max(0.0, frame.x0 - box.x0) + max(0.0, box.x1 - frame.x1)
            outside += max(0.0, frame.y0 - box.y0) + max(0.0, box.y1 - frame.y1)
            cost = 1e3 * outside + sum(_overlap(box, other) for other in taken)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, ann)
            else:
                ann.remove()
            if cost == 0:
                break
        assert best is not None
        best[1].set_in_layout(False)  # placed for this layout: it must not change it
        taken.append(_text_box(best[1], renderer))
        placed[i] = best[1]
    return [placed[i] for i in range(len(texts))]


def _segment_boxes(ax: Any) -> list[Any]:
    """A box on screen per segment of the axes' lines, as drawn (steps included): labels avoid them."""
    import numpy as np
    from matplotlib.cbook import STEP_LOOKUP_MAP
    from matplotlib.transforms import Bbox

    boxes = []
    for line in ax.lines:
        steps = STEP_LOOKUP_MAP[line.get_drawstyle()](*line.get_xydata().T)
        xy = ax.transData.transform(np.column_stack(steps))
        boxes += [Bbox([np.minimum(a, b), np.maximum(a, b)]).padded(1) for a, b in itertools.pairwise(xy)]
    return boxes


def _text_box(ann: Any, renderer: Any) -> Any:
    """The label's own box on screen, without its leader line, padded by 1 pixel."""
    from matplotlib.text import Text

    ann.update_positions(renderer)  # the annotation's own extent does this first; Text's does not
    return Text.get_window_extent(ann, renderer).padded(1)


def _overlap(a: Any, b: Any) -> float:
    """The area (pixels²) two boxes share."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
