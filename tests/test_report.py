"""The report's figures read well: sizes in kB/MB on ticks that never overlap, a panel only for a
size that differs between stages, each stage named once (its marker in one legend)."""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

import pytest

from shrinkflow.report import accuracy_size_figure, latency_figure, sparsity_figure

SIZE_LABEL = re.compile(r"\d+(\.\d{1,3})? (B|kB|MB|GB)")
METHODS = ["train", "magnitude", "soft_kd", "static_int8", "agp", "heads", "ptq", "qat"]


def document(packed: list[int], artifact: list[int], stages: list[str] | None = None) -> dict[str, Any]:
    stages = stages or ["teacher", "pruned", "distilled", "quantized"][: len(packed)]
    return {
        stage: {
            "status": "done",
            "method": METHODS[i],
            "accuracy": 0.975 + 0.001 * (i % 3),
            "packed_bytes": p,
            "artifact_bytes": a,
            "latency_b1_p50_ms": 0.02 + 0.001 * i,
            "layer_sparsity": {"1.weight": 0.0, "3.weight": 0.5 * (i > 0)},
        }
        for i, (stage, p, a) in enumerate(zip(stages, packed, artifact, strict=True))
    }


#: What the digits `kedro run` measured (packed and artifact bytes per stage), and the hard cases.
CASES = {
    "digits run": document([340_353, 112_892, 112_929, 28_940], [342_997, 343_125, 343_253, 90_901]),
    "sizes within 0.5%": document([343_000, 343_100, 343_900, 344_500], [343_000, 343_100, 343_900, 344_700]),
    "equal artifact bytes": document([340_353, 112_892, 112_929, 28_940], [343_000] * 4),
    "all sizes equal": document([34_000] * 4, [40_000] * 4),
    "8 stages close together": document(
        [30_000 + 150 * i for i in range(8)],
        [40_000 + 97 * i for i in range(8)],
        [f"stage{i}" for i in range(8)],
    ),
    "megabytes": document(
        [6_284_432, 5_230_970, 5_224_335, 4_420_079], [6_306_577, 5_253_201, 5_236_593, 4_459_171]
    ),
}
PANELS = {
    "digits run": ["packed_bytes", "artifact_bytes"],
    "sizes within 0.5%": ["packed_bytes", "artifact_bytes"],
    "equal artifact bytes": ["packed_bytes"],
    "all sizes equal": ["packed_bytes"],  # nothing differs: the packed panel stays
    "8 stages close together": ["packed_bytes", "artifact_bytes"],
    "megabytes": ["packed_bytes", "artifact_bytes"],
}


def drawn(fig: Any) -> Any:
    """``fig`` laid out and drawn as saving it does (pyplot closed it: its canvas no longer draws)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig


def shown_ticks(ax: Any) -> list[Any]:
    return [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]


def overlapping(boxes: list[Any]) -> list[tuple[int, int]]:
    return [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]


@pytest.mark.parametrize("case", list(CASES))
def test_accuracy_size_ticks_are_kb_or_mb_distinct_and_apart(case: str):
    fig = drawn(accuracy_size_figure(CASES[case]))
    for ax in fig.axes:
        sizes = [row[ax.get_xlabel().removesuffix(" (log scale)")] for row in CASES[case].values()]
        ticks = shown_ticks(ax)
        texts = [t.get_text() for t in ticks]
        assert all(SIZE_LABEL.fullmatch(text) for text in texts), texts
        assert len(set(texts)) == len(texts), texts
        # three to six round ticks; equal sizes get one, that size
        assert 3 <= len(texts) <= 6 if len(set(sizes)) > 1 else len(texts) == 1, texts
        assert overlapping([t.get_window_extent() for t in ticks]) == [], texts
        assert ax.get_xticklabels(minor=True) == []  # no minor labels to pile up on the major ones
        lo, hi = ax.get_xlim()
        assert lo < min(sizes) and max(sizes) < hi and hi / lo >= 1.04  # padded, even 0.5% apart
    if case == "all sizes equal":
        assert [t.get_text() for t in shown_ticks(fig.axes[0])] == ["34 kB"]
    if case == "sizes within 0.5%":
        assert [t.get_text() for t in shown_ticks(fig.axes[0])] == ["340 kB", "345 kB", "350 kB"]


@pytest.mark.parametrize("case", list(CASES))
def test_a_panel_only_for_a_size_that_differs_between_stages(case: str):
    fig = accuracy_size_figure(CASES[case])
    assert [ax.get_xlabel().removesuffix(" (log scale)") for ax in fig.axes] == PANELS[case]


@pytest.mark.parametrize("case", ["digits run", "8 stages close together"])
def test_each_stage_is_named_once_with_its_method_and_its_own_marker(case: str):
    doc = CASES[case]
    fig = drawn(accuracy_size_figure(doc))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        *[f"{stage} ({row['method']})" for stage, row in doc.items()],
        "Pareto front",
    ]
    markers = [(h.get_marker(), h.get_markeredgecolor()) for h in legend.legend_handles[:-1]]
    assert len(set(markers)) == len(doc)
    assert all(not ax.texts for ax in fig.axes)  # no text on the points to collide
    # the legend sits beside the panels, over none of them
    boxes = [legend.get_window_extent(), *[ax.get_window_extent() for ax in fig.axes]]
    assert overlapping(boxes) == []


def test_latency_figure_has_a_throughput_panel_only_when_throughput_was_measured():
    doc = CASES["digits run"]
    assert len(latency_figure(doc).axes) == 1
    with_throughput = {s: {**r, "throughput_b64_sps": 1000.0 + i} for i, (s, r) in enumerate(doc.items())}
    fig = latency_figure(with_throughput)
    assert len(fig.axes) == 2 and "throughput_b64" in fig.axes[1].get_ylabel()


def test_sparsity_figure_draws_only_layers_with_zeros_and_says_how_many_it_left_out():
    fig = drawn(sparsity_figure(CASES["digits run"]))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3.weight"]
    assert fig.get_suptitle() == "per-layer sparsity per stage (1 layers without zeros left out)"
    assert ax.get_ylim() == (0.0, 0.55)  # 10% past the largest share, 50%
    dense = {s: {**r, "layer_sparsity": {"1.weight": 0.0}} for s, r in CASES["digits run"].items()}
    (ax,) = sparsity_figure(dense).axes
    assert [t.get_text() for t in ax.texts] == ["no zero weights in any of 1 layers"]


def test_sparsity_figure_of_a_transformer_names_each_pruned_layer_without_overlap():
    names = [
        f"blocks.{b}.attention.{p}.weight" for b in range(2) for p in ("query", "key", "value", "output")
    ]
    names += [f"blocks.{b}.ffn_{d}.weight" for b in range(2) for d in ("in", "out")] + ["embed.weight"]
    doc = {
        stage: {
            "status": "done",
            "layer_sparsity": {n: 0.01 * (i + 1) * (n != "embed.weight") for n in names},
        }
        for i, stage in enumerate(["teacher", "pruned", "distilled", "quantized"])
    }
    fig = drawn(sparsity_figure(doc))
    (ax,) = fig.axes
    labels = [t for t in ax.get_xticklabels() if t.get_text()]
    assert [t.get_text() for t in labels] == names[:-1]  # embed.weight has no zeros: left out
    # slanted names are parallel: apart when their baselines are a line height apart or more
    anchors = [ax.transData.transform((t.get_position()[0], 0))[0] for t in labels]
    (angle,) = {t.get_rotation() for t in labels}
    line = 1.2 * labels[0].get_fontsize() * fig.dpi / 72
    assert min(b - a for a, b in itertools.pairwise(anchors)) * math.sin(math.radians(angle)) >= line
    assert all(t.get_window_extent().x0 >= 0 for t in labels)  # the longest names fit in the figure
    assert ax.get_ylim() == pytest.approx((0.0, 0.05))  # 4% at most: the axis shows it, not 0-100%
