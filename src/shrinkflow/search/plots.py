"""The search's figure: every finished trial's validation accuracy against its size."""

from __future__ import annotations

from typing import Any

from shrinkflow.core.pareto import pareto_mask
from shrinkflow.search.study import SearchResult

__all__ = ["front_figure"]


def front_figure(result: SearchResult) -> Any:
    """Validation accuracy against packed size for every finished trial (the figures the search
    chose on): infeasible trials hollow, the trials Pareto-optimal on all objectives marked, the
    accuracy-size front of the feasible trials as a step line, the teacher and the chosen trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    trials = result.trials
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    if len(done):
        size, accuracy = done["val.packed_bytes"], 100 * done["val.accuracy"]
        feasible = done["feasible"].astype(bool)
        axes.scatter(size[feasible], accuracy[feasible], c="#9aa5b1", s=22, label="trial")
        if (~feasible).any():
            axes.scatter(
                size[~feasible],
                accuracy[~feasible],
                facecolors="none",
                edgecolors="#9aa5b1",
                s=22,
                label="infeasible (misses a constraint)",
            )
        optimal = done[done["pareto"]]
        axes.scatter(
            optimal["val.packed_bytes"],
            100 * optimal["val.accuracy"],
            c="#1f77b4",
            s=26,
            label="Pareto-optimal (all objectives)",
        )
        ok = done[feasible]
        two = ok[
            pareto_mask(ok[["val.packed_bytes", "val.accuracy"]].to_numpy(float), ["minimize", "maximize"])
        ]
        two = two.sort_values("val.packed_bytes")
        axes.step(
            two["val.packed_bytes"],
            100 * two["val.accuracy"],
            where="post",
            c="#1f77b4",
            lw=1.2,
            label="front: accuracy vs size",
        )
    teacher = result.teacher["val"]
    axes.scatter(
        [teacher["packed_bytes"]],
        [100 * teacher["accuracy"]],
        marker="*",
        s=140,
        c="#d62728",
        label="teacher",
    )
    if result.chosen:
        m = result.chosen["val"]
        axes.scatter(
            [m["packed_bytes"]],
            [100 * m["accuracy"]],
            marker="D",
            s=60,
            facecolors="none",
            edgecolors="k",
            label=f"chosen (trial {result.chosen['number']})",
        )
    axes.set_xscale("log")
    axes.set_xlabel("packed bytes (log)")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"Recipe search: {len(done)} finished trials (validation split)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
