"""The study read back: one row per trial, feasibility, the Pareto front and the choice.

Every figure carries the split it comes from: ``val.<metric>`` was measured on the validation
split while the search ran (objectives, constraints and the choice read only these), and
``test.<metric>`` on the test split once, after the trials, for the chosen and the Pareto trials
(empty for the others). Sizes, MACs and speeds do not depend on the split but are measured in the
same pass and carry its prefix.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from shrinkflow.core.pareto import pareto_mask
from shrinkflow.search.config import OBJECTIVES, SearchConfig

__all__ = ["choose", "front", "run_config", "table", "with_test"]

_NOT_METRICS = ("number", "recipe", "params", "state", "pareto", "feasible", "violation", "seconds", "worker")


def table(study: Any, cfg: SearchConfig) -> pd.DataFrame:
    """One row per trial: number, state, ``feasible``, ``violation`` (the largest constraint
    violation; <= 0 when all hold), ``pareto``, worker, ``param.<key>``, ``val.<metric>`` and
    seconds (:func:`with_test` adds ``test.<metric>``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        violations = t.user_attrs.get("constraint") or []
        complete = t.state.name == "COMPLETE"
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "feasible": complete and all(v <= 0 for v in violations),
            "violation": max(violations) if violations else math.nan,
            "worker": t.user_attrs.get("worker"),
        }
        row.update({f"param.{k}": v for k, v in t.params.items()})
        row.update({f"val.{k}": v for k, v in t.user_attrs.get("metrics", {}).items()})
        row["seconds"] = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else math.nan
        )
        row["recipe"] = t.user_attrs.get("recipe")
        row["params"] = dict(t.params)
        rows.append(row)
    trials = pd.DataFrame(rows)
    if len(trials):
        trials.insert(3, "pareto", front(trials, cfg))
    return trials


def with_test(trials: pd.DataFrame, tested: dict[int, dict[str, float]]) -> pd.DataFrame:
    """``trials`` with ``test.<metric>`` columns for the trials in ``tested`` (NaN for the others)."""
    if not tested:
        return trials
    frame = pd.DataFrame.from_dict(tested, orient="index").add_prefix("test.")
    return trials.join(frame, on="number")


def front(trials: pd.DataFrame, cfg: SearchConfig) -> list[bool]:
    """The feasible trials no other feasible trial dominates on the objectives (validation values)."""
    feasible = trials["feasible"].to_numpy(dtype=bool)
    on = np.zeros(len(trials), dtype=bool)
    if feasible.any():
        points = trials.loc[feasible, [f"val.{name}" for name in cfg.objectives]].to_numpy(dtype=float)
        on[feasible] = pareto_mask(points, cfg.directions)
    return on.tolist()


def _order(cfg: SearchConfig, first: list[tuple[str, bool]]) -> tuple[list[str], list[bool]]:
    """Sort keys: ``first`` (column, ascending), then every objective in its direction, then number."""
    keys = list(first)
    keys += [
        (f"val.{n}", OBJECTIVES[n] == "minimize") for n in cfg.objectives if f"val.{n}" not in dict(keys)
    ]
    keys.append(("number", True))
    return [k for k, _ in keys], [a for _, a in keys]


def choose(trials: pd.DataFrame, teacher: dict[str, Any], cfg: SearchConfig) -> dict[str, Any] | None:
    """The feasible trial to write back, by ``cfg.choose`` (see :class:`SearchConfig`), from
    validation figures only; ``teacher`` holds the teacher's validation metrics. None when no
    trial finished feasible. Ties go down the objectives in order, then to the earlier trial, so
    with accuracy among the objectives the choice is on the Pareto front."""
    done = trials[trials["feasible"]] if len(trials) else trials
    if not len(done):
        return None
    size = f"val.{cfg.size_key}"
    close = done[done["val.accuracy"] >= teacher["accuracy"] - cfg.choose_within - 1e-12]
    if cfg.choose == "smallest" and len(close):
        by, ascending = _order(cfg, [(size, True), ("val.accuracy", False)])
        pick = close.sort_values(by, ascending=ascending).iloc[0]
    else:
        by, ascending = _order(cfg, [("val.accuracy", False), (size, True)])
        pick = done.sort_values(by, ascending=ascending).iloc[0]
    return {
        "number": int(pick["number"]),
        "rule": cfg.choose,
        "within_reach": bool(len(close)),
        "constraints": list(cfg.constraints),
        "recipe": pick["recipe"],
        "params": pick["params"],
        **{split: _metrics(pick, split) for split in ("val", "test")},
    }


def _metrics(row: pd.Series, split: str) -> dict[str, float]:
    prefix = f"{split}."
    return {
        str(k).removeprefix(prefix): float(row[k])
        for k in row.index
        if str(k).startswith(prefix) and _is_number(row[k])
    }


def _is_number(value: Any) -> bool:
    """A real number, Python's or numpy's (pandas rows hold numpy scalars), and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not pd.isna(value)


def run_config(chosen: dict[str, Any], seed: int) -> dict[str, Any]:
    """The chosen recipe as a ``kedro run --config`` file: ``run.params`` holds the full
    prune/distill/quantize blocks (they deep-merge over the environment's parameters)."""
    return {"run": {"params": {"seed": seed, **chosen["recipe"]}}}
