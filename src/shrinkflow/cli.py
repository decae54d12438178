"""``kedro shrinkflow ...``: project commands (Kedro adds the ``cli`` group of ``<package>.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shrinkflow import plugins

#: runs ``compare --curves`` draws at most (one colour each)
CURVE_RUNS = 8


@click.group()
def cli() -> None:
    """Project commands."""


@cli.group()
def shrinkflow() -> None:
    """shrinkflow: compare tracked runs, list plugins."""


def _parse_tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--tag")
        tags[key] = val
    return tags


def _split(value: str, option: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise click.BadParameter(f"{value!r}: expected a comma-separated list", param_hint=option)
    if allowed is not None:
        unknown = [v for v in items if v not in allowed]
        if unknown:
            raise click.BadParameter(f"{unknown}: expected names from {list(allowed)}", param_hint=option)
    return items


@shrinkflow.command()
@click.option("--experiment", default="shrinkflow", show_default=True, help="MLflow experiment name.")
@click.option(
    "--metrics",
    default="accuracy,packed_bytes,artifact_bytes",
    show_default=True,
    help="Comma-separated metric names, shown for every stage.",
)
@click.option(
    "--stages",
    default="teacher,pruned,distilled,quantized",
    show_default=True,
    help="Comma-separated stages.",
)
@click.option(
    "--filter",
    "filter_string",
    default="",
    help="An MLflow search filter, e.g. \"params.`prune.method` = 'agp'\".",
)
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE: only runs with this tag (repeatable).")
@click.option("--max-runs", default=50, show_default=True, type=click.IntRange(1, 50_000))
@click.option(
    "--size-metric",
    default="packed_bytes",
    show_default=True,
    type=click.Choice(["packed_bytes", "artifact_bytes", "params_nonzero"]),
    help="x axis of the Pareto plot.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("data/08_reporting/compare.png"),
    show_default=True,
    help="Where to write the accuracy-size plot.",
)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the table as CSV."
)
@click.option(
    "--partial", is_flag=True, help="Also list runs that evaluated only some stages (single DVC stages)."
)
@click.option(
    "--curves",
    type=click.Path(dir_okay=False, path_type=Path),
    is_flag=False,
    flag_value=Path("data/08_reporting/curves.png"),
    default=None,
    help="Also draw the runs' per-epoch training curves side by side (the newest "
    f"{CURVE_RUNS}), to this file [flag alone: data/08_reporting/curves.png].",
)
@click.option(
    "--tracking-uri", default=None, help="Default: $MLFLOW_TRACKING_URI, else the project's mlflow.db."
)
def compare(
    experiment: str,
    metrics: str,
    stages: str,
    filter_string: str,
    tags: tuple[str, ...],
    max_runs: int,
    size_metric: str,
    plot: Path,
    csv_path: Path | None,
    partial: bool,
    curves: Path | None,
    tracking_uri: str | None,
) -> None:
    """Per-stage metrics of tracked runs side by side, and accuracy against size with the Pareto front."""
    from shrinkflow import compare as cmp
    from shrinkflow.tracking import tracking_uri as default_uri

    metric_names = _split(metrics, "--metrics")
    if "accuracy" not in metric_names:
        metric_names.insert(0, "accuracy")
    if size_metric not in metric_names:
        metric_names.append(size_metric)
    stage_names = _split(stages, "--stages", cmp.STAGES)
    uri = tracking_uri or default_uri()
    try:
        runs = cmp.load_runs(
            uri,
            experiment,
            filter_string=filter_string,
            tags=_parse_tags(tags),
            metrics=metric_names,
            stages=stage_names,
            max_runs=max_runs,
            partial=partial,
        )
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    if runs.empty:
        given = [f"--filter {filter_string!r}"] if filter_string else []
        given += [f"--tag {t}" for t in tags]
        raise click.ClickException(
            f"no runs in experiment {experiment!r} at {uri}"
            + (f" matching {' '.join(given)}" if given else "")
            + f": expected runs that evaluated {'some' if partial else 'every one'} of the stages "
            + f"{', '.join(stage_names)}"
            + ("" if partial else " (--partial also lists runs that evaluated only some)")
        )
    runs, note = cmp.one_dataset(runs)
    if note:
        click.echo(f"note: {note}\n")
    points = cmp.stage_points(runs, size_metric, stage_names)
    on = f" on {runs['dataset'].iloc[0]!r}" if runs["dataset"].notna().iloc[0] else ""
    click.echo(f"{len(runs)} run(s) of experiment {experiment!r}{on} at {uri}\n")
    table = cmp.by_stage(runs, metric_names, stage_names).astype(object).fillna("")
    click.echo(table.to_markdown(index=False, floatfmt=".4g"))
    front = points[points["pareto"]].sort_values("size")
    click.echo(f"\nPareto front (accuracy vs {size_metric}):")
    front = front.assign(run_id=front["run_id"].str[:8])
    if (front["size"] % 1 == 0).all():
        front["size"] = front["size"].astype("int64")
    click.echo(
        front[["run_name", "run_id", "stage", "size", "accuracy"]].to_markdown(index=False, floatfmt=".4g")
    )
    cmp.plot_pareto(points, size_metric, plot)
    click.echo(f"\nplot: {plot}")
    if curves is not None:
        _draw_curves(uri, runs, stage_names, curves)
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(csv_path, index=False)
        click.echo(f"table: {csv_path}")


def _draw_curves(uri: str, runs: Any, stages: list[str], path: Path) -> None:
    from shrinkflow.curves import load_curves, plot_curves

    newest = runs.head(CURVE_RUNS)
    labels = {f"{row.run_name} ({row.run_id[:8]})": row.run_id for row in newest.itertuples()}
    try:
        plot_curves(load_curves(uri, labels, stages), path, stages)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"curves: {path} ({len(labels)} of {len(runs)} run(s))")


@shrinkflow.command(name="plugins")
def list_plugins() -> None:
    """Every registered plugin: family, name, distribution and version."""
    for group in plugins.FAMILIES:
        for name in plugins.available(group):
            info = plugins.info(group, name)
            click.echo(f"{group:22s} {name:16s} {info.distribution}=={info.version}")
