"""Automated recipe search: an Optuna study over prune -> distill -> quantize -> evaluate.

Each trial samples a recipe from a declared space (dotted parameter keys, the same ones
``kedro run --params`` takes), runs the three compression stages on the teacher trained once, and
measures the final model on the **validation** split and, for the runtime objectives, exported to
ONNX and run by ONNX Runtime. The study is multi-objective (by default maximize accuracy, minimize
packed bytes and batch-1 ONNX Runtime latency), may be constrained (``onnx_latency_b1_ms <= 0.05``),
and its result is the Pareto front of the feasible trials. The chosen recipe is written back as a
``kedro run --config`` file that reproduces the trial. Only then is the **test** split read: once,
for the chosen trial and the Pareto trials, so the reported test accuracy is not the one selected on.

Why Optuna and not a hand-written loop: its samplers (TPE and NSGA-II handle several objectives and
constraints), its storages (a SQLite file by default; any database URL for a team, where workers on
several machines join one study by name), heartbeats that fail and retry the trial of a killed
worker, and its pruners are what a search needs, kept by others.

A trial reproduces ``kedro run`` exactly: every stage is seeded as the pipeline's ``SeedHook``
seeds the node of the same name (:func:`shrinkflow.core.training.node_seed`), and models pass
through their serialized form between stages, as they do through the catalog's files.

Modules: :mod:`.config` (objectives, constraints, the configuration), :mod:`.space` (sampling a
recipe), :mod:`.trial` (running and measuring one), :mod:`.study` (the Optuna study and the test
evaluation), :mod:`.results` (the trial table, Pareto front and choice), :mod:`.plots`.
This package imports neither kedro nor mlflow. Tracking subscribes through :func:`listen`.
"""

from shrinkflow.search.config import (
    CHOICES,
    METRICS,
    OBJECTIVES,
    RUNTIME_METRICS,
    Constraint,
    SearchConfig,
)
from shrinkflow.search.plots import front_figure
from shrinkflow.search.results import choose, front, run_config, table
from shrinkflow.search.space import apply, sample
from shrinkflow.search.study import WORKER, SearchResult, run_search
from shrinkflow.search.trial import Hopeless, build_recipe, listen, measure_split, run_recipe, runtime_metrics

__all__ = [
    "CHOICES",
    "METRICS",
    "OBJECTIVES",
    "RUNTIME_METRICS",
    "WORKER",
    "Constraint",
    "Hopeless",
    "SearchConfig",
    "SearchResult",
    "apply",
    "build_recipe",
    "choose",
    "front",
    "front_figure",
    "listen",
    "measure_split",
    "run_config",
    "run_recipe",
    "run_search",
    "runtime_metrics",
    "sample",
    "table",
]
