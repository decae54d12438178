"""Search node."""

from __future__ import annotations

from typing import Any

import pandas as pd

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.search import SearchConfig, front_figure, run_config, run_search


def search_recipes(
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    test: Split,
    cfg: SearchConfig,
    prune: dict[str, Any],
    distill: dict[str, Any],
    quantize: dict[str, Any],
    measure: MeasureConfig,
    seed: int,
) -> tuple[pd.DataFrame, Any, dict[str, Any], dict[str, Any]]:
    """Run this worker's share of the study, then report the whole study: every trial, the Pareto
    front plot, the chosen recipe as a ``kedro run --config`` file and a summary."""
    params = {"prune": prune, "distill": distill, "quantize": quantize}
    result = run_search(cfg, params, teacher, train, val, test, measure, seed)
    chosen = result.chosen
    summary = {
        "study": cfg.study_name,
        "objectives": result.objectives,
        "trials": len(result.trials),
        "finished": int(result.trials["state"].isin(["COMPLETE", "PRUNED"]).sum())
        if len(result.trials)
        else 0,
        "ran_here": result.ran,
        "seconds_here": result.seconds,
        "teacher": {k: v for k, v in result.teacher.items() if isinstance(v, (int, float, str))},
        "chosen": chosen,
        "pareto": []
        if not len(result.trials)
        else result.trials[result.trials["pareto"]]["number"].astype(int).tolist(),
    }
    recipe = run_config(chosen, seed) if chosen else {"run": {"params": {}}}
    return (
        result.trials.drop(columns=["recipe", "params"], errors="ignore"),
        front_figure(result),
        recipe,
        summary,
    )
