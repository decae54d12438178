"""Search node."""

from __future__ import annotations

from typing import Any

import pandas as pd

from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.export import ExportConfig
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.search import SearchConfig, front_figure, run_config, run_search

#: what each figure of trials.csv and summary.json was measured on
SPLITS = {
    "val": "validation split, measured while the search ran; objectives, constraints and the choice read only these",
    "test": "test split, measured once after the trials, for the chosen and the Pareto trials only",
}


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
    export: ExportConfig,
    seed: int,
) -> tuple[pd.DataFrame, Any, dict[str, Any], dict[str, Any]]:
    """Run this worker's share of the study, then report the whole study: every trial, the Pareto
    front plot, the chosen recipe as a ``kedro run --config`` file and a summary."""
    params = {"prune": prune, "distill": distill, "quantize": quantize}
    result = run_search(cfg, params, teacher, train, val, test, measure, seed, export)
    trials, chosen = result.trials, result.chosen
    summary = {
        "study": cfg.study_name,
        "splits": SPLITS,
        "objectives": result.objectives,
        "constraints": result.constraints,
        "choose": cfg.choose,
        "trials": len(trials),
        "finished": int(trials["state"].isin(["COMPLETE", "PRUNED"]).sum()) if len(trials) else 0,
        "feasible": int(trials["feasible"].sum()) if len(trials) else 0,
        "ran_here": result.ran,
        "seconds_here": result.seconds,
        "teacher": result.teacher,
        "chosen": chosen,
        "pareto": [] if not len(trials) else trials[trials["pareto"]]["number"].astype(int).tolist(),
    }
    recipe = run_config(chosen, seed) if chosen else {"run": {"params": {}}}
    return trials.drop(columns=["recipe", "params"], errors="ignore"), front_figure(result), recipe, summary
