"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    # the recipe search runs on its own (`kedro run --pipelines search`), after a run made the teacher
    pipelines["__default__"] = sum((p for name, p in pipelines.items() if name != "search"), Pipeline([]))
    return pipelines
