"""Read shrinkflow runs back from MLflow and compare them: a table and an accuracy-size Pareto plot.

Every ``kedro run`` logs each stage's evaluation as ``<stage>.<metric>`` (see ``hooks.TrackingHook``);
this module turns the runs of an experiment into one row per run and finds the runs and stages
that no other beats on both accuracy and size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkflow.core.pareto import pareto_mask
from shrinkflow.plotting import place_labels, size_axis, stage_styles
from shrinkflow.stages import MAKER
from shrinkflow.stages import MODELS as STAGES

__all__ = [
    "STAGES",
    "by_stage",
    "draw_pareto",
    "load_runs",
    "one_dataset",
    "pareto_figure",
    "pareto_front",
    "pareto_legend",
    "plot_pareto",
    "stage_points",
]


def load_runs(
    tracking_uri: str,
    experiment: str = "shrinkflow",
    *,
    filter_string: str = "",
    tags: dict[str, str] | None = None,
    metrics: Sequence[str] = ("accuracy", "packed_bytes"),
    stages: Sequence[str] = STAGES,
    max_runs: int = 100,
    partial: bool = False,
) -> pd.DataFrame:
    """One row per run that evaluated every requested stage (any of them with ``partial``), newest first.

    A full ``kedro run`` and the ``report`` stage of ``dvc repro`` evaluate every stage; the
    per-stage DVC runs (``evaluate@pruned``...) only their own, and are left out unless ``partial``.

    Columns: run id, name, user, start time, DVC experiment, git commit, data set (the ``dataset``
    tag: the data-set plugin's name; None on runs that predate it), then ``<stage>.<metric>``
    for every requested stage and metric (NaN where a run did not evaluate that stage). ``tags``
    adds ``tags.<key> = '<value>'`` clauses to MLflow's ``filter_string``.
    """
    import mlflow

    clauses = [filter_string] if filter_string else []
    for key, value in (tags or {}).items():
        clauses.append(f"tags.`{key}` = '{value}'")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(
            f"no MLflow experiment {experiment!r} at {tracking_uri}; experiments there: {names}"
        )
    rows: list[dict[str, Any]] = []
    wanted = [f"{stage}.{metric}" for stage in stages for metric in metrics]
    for run in _search(client, found.experiment_id, " and ".join(clauses)):
        if len(rows) >= max_runs:
            break
        values = run.data.metrics
        # a stage switched off (method none) counts as evaluated: the report marks it skipped
        evaluated = [
            f"{stage}.accuracy" in values or run.data.tags.get(f"method.{MAKER.get(stage, '')}") == "none"
            for stage in stages
        ]
        if not (any(evaluated) if partial else all(evaluated)):
            continue
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "user": run.data.tags.get("mlflow.user"),
            "start_time": pd.Timestamp(run.info.start_time, unit="ms"),
            "dvc_exp": run.data.tags.get("DVC_EXP_NAME"),
            "git_commit": (run.data.tags.get("mlflow.source.git.commit") or "")[:10] or None,
            "dataset": run.data.tags.get("dataset"),
        }
        row.update({key: values.get(key) for key in wanted})
        rows.append(row)
    columns = ["run_id", "run_name", "user", "start_time", "dvc_exp", "git_commit", "dataset", *wanted]
    return pd.DataFrame(rows, columns=columns)


def one_dataset(runs: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The runs on the first (newest) run's data set, and a note naming the others if there are any.

    Accuracies measured on different data sets are not comparable, and a Pareto front across them
    would rank a digits model above an MNIST one; so a comparison keeps to one data set, and the
    note says how to pick another (``--tag dataset=NAME``).
    """
    names = runs["dataset"].fillna("unknown") if "dataset" in runs else pd.Series("unknown", runs.index)
    if names.nunique() <= 1:
        return runs, None
    keep = names.iloc[0]
    counts = names.value_counts()
    others = ", ".join(f"{n!r} ({c})" for n, c in counts.items() if n != keep)
    note = (
        f"the runs are on {counts.size} data sets; comparing the {counts[keep]} on {keep!r} (the newest "
        f"run's) and leaving out {others}: accuracies on different data sets are not comparable. "
        "--tag dataset=NAME picks one."
    )
    return runs[names == keep].reset_index(drop=True), note


def _search(client: Any, experiment_id: str, filter_string: str) -> Any:
    """Every matching run, newest first, a page at a time (completeness is judged after reading,
    so ``max_results`` alone would cut complete runs behind incomplete single-stage DVC runs)."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string,
            max_results=500,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


def by_stage(runs: pd.DataFrame, metrics: Sequence[str], stages: Sequence[str] = STAGES) -> pd.DataFrame:
    """The table people read: one row per (run, stage), one column per metric."""
    rows = []
    for _, run in runs.iterrows():
        for stage in stages:
            values = {m: run.get(f"{stage}.{m}") for m in metrics}
            if all(v is None or pd.isna(v) for v in values.values()):
                continue
            rows.append(
                {
                    "run": run["run_name"],
                    "run_id": run["run_id"][:8],
                    "user": run["user"],
                    "dvc_exp": run["dvc_exp"],
                    "stage": stage,
                    **values,
                }
            )
    table = pd.DataFrame(rows, columns=["run", "run_id", "user", "dvc_exp", "stage", *metrics])
    for m in metrics:  # byte and parameter counts print as integers, not 3.404e+05
        col = pd.to_numeric(table[m], errors="coerce")
        if col.notna().any() and (col.dropna() % 1 == 0).all() and col.abs().max() >= 1:
            table[m] = col.astype("Int64")
    return table


def stage_points(runs: pd.DataFrame, size_metric: str, stages: Sequence[str] = STAGES) -> pd.DataFrame:
    """Long form: one row per (run, stage) with ``size`` and ``accuracy``; stages lacking either dropped."""
    points = []
    for _, run in runs.iterrows():
        for stage in stages:
            size, acc = run.get(f"{stage}.{size_metric}"), run.get(f"{stage}.accuracy")
            if size is not None and acc is not None and pd.notna(size) and pd.notna(acc):
                points.append(
                    {
                        "run_id": run["run_id"],
                        "run_name": run["run_name"],
                        "stage": stage,
                        "size": float(size),
                        "accuracy": float(acc),
                    }
                )
    frame = pd.DataFrame(points, columns=["run_id", "run_name", "stage", "size", "accuracy"])
    frame["pareto"] = pareto_front(frame["size"].tolist(), frame["accuracy"].tolist()) if len(frame) else []
    return frame


def pareto_front(size: Sequence[float], accuracy: Sequence[float]) -> list[bool]:
    """``True`` for each point no other point dominates (no larger and at least as accurate, one strictly).

    Exact duplicates are all kept; see :func:`shrinkflow.core.pareto.pareto_mask`, which does the work.
    """
    return pareto_mask(list(zip(size, accuracy, strict=True)), ("minimize", "maximize"))


def draw_pareto(
    ax: Any, points: pd.DataFrame, size_metric: str, styles: dict[str, dict[str, Any]] | None = None
) -> None:
    """Accuracy (%) against size on ``ax``: a colour and hollow marker per stage (``styles``, default
    :func:`stage_styles`), the Pareto front as a step line. No legend: see :func:`pareto_legend`.

    ``points`` has ``stage``, ``size``, ``accuracy`` and ``pareto``.
    """
    styles = styles or stage_styles(points["stage"].tolist())
    for stage, group in points.groupby("stage", sort=False):
        style = styles[str(stage)]
        ax.scatter(
            group["size"], 100 * group["accuracy"], marker=style["marker"], facecolors="none",
            edgecolors=style["color"], linewidths=1.5, s=49, zorder=3,
        )  # fmt: skip
    front = points[points["pareto"]].sort_values("size")
    if len(front):
        ax.step(front["size"], 100 * front["accuracy"], where="post", color="black", lw=1, zorder=2)
    size_axis(ax, points["size"].tolist(), "" if size_metric == "params_nonzero" else "B")
    ax.yaxis.get_major_formatter().set_useOffset(False)
    ax.set_xlabel(f"{size_metric} (log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, which="major", alpha=0.3)


def pareto_legend(fig: Any, styles: dict[str, dict[str, Any]], labels: dict[str, str] | None = None) -> Any:
    """One legend for the figure, outside the axes on the right: a marker per stage (``labels``
    overrides its text, e.g. ``pruned (magnitude)``) and the Pareto front line."""
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], ls="", marker=st["marker"], mfc="none", mec=st["color"], mew=1.5, ms=7,
               label=(labels or {}).get(stage, stage))
        for stage, st in styles.items()
    ]  # fmt: skip
    handles.append(Line2D([], [], color="black", lw=1, label="Pareto front"))
    return fig.legend(handles=handles, loc="outside right upper", fontsize=8)


def pareto_figure(points: pd.DataFrame, size_metric: str) -> Any:
    """The accuracy-size figure of :func:`stage_points` (every run's stages); with more than one run,
    the Pareto front's points are labelled with their run's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), layout="constrained")
    styles = stage_styles(points["stage"].tolist())
    draw_pareto(ax, points, size_metric, styles)
    pareto_legend(fig, styles)
    front = points[points["pareto"]]
    if points["run_id"].nunique() > 1:
        place_labels(
            ax, front["size"].tolist(), (100 * front["accuracy"]).tolist(), front["run_name"].tolist()
        )
    plt.close(fig)  # keep pyplot's registry empty; the figure still draws and saves
    return fig


def plot_pareto(points: pd.DataFrame, size_metric: str, path: Path) -> Path:
    """Write :func:`pareto_figure` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pareto_figure(points, size_metric).savefig(path, dpi=120)
    return path
