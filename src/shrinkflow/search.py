"""Automated recipe search: an Optuna study over prune -> distill -> quantize -> evaluate.

Each trial samples a recipe from a declared space (dotted parameter keys, the same ones
``kedro run --params`` takes), runs the three compression stages on the teacher trained once, and
evaluates the final model. The study is multi-objective (by default maximize accuracy, minimize
packed bytes and batch-1 latency); its result is the Pareto front of the completed trials, and the
chosen recipe is written back as a ``kedro run --config`` file that reproduces the trial.

Why Optuna and not a hand-written loop: its samplers (TPE and NSGA-II handle several objectives),
its storages (a SQLite file by default; any database URL for a team, where workers on several
machines join one study by name), heartbeats that fail and retry the trial of a killed worker, and
its pruners are what a search needs, kept by others.

A trial reproduces ``kedro run`` exactly: every stage is seeded as the pipeline's ``SeedHook``
seeds the node of the same name (:func:`shrinkflow.core.training.node_seed`), and models pass
through their serialized form between stages, as they do through the catalog's files.

This module imports neither kedro nor mlflow. Tracking subscribes through :func:`listen`.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shrinkflow.core import artifact as artifacts
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.data import Split
from shrinkflow.core.evaluation import evaluate_artifact
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.training import evaluate, node_seed, seed_everything
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage, distill, run_method

__all__ = [
    "OBJECTIVES",
    "WORKER",
    "Hopeless",
    "SearchConfig",
    "SearchResult",
    "apply",
    "choose",
    "front_figure",
    "listen",
    "run_config",
    "run_recipe",
    "run_search",
    "sample",
    "table",
]

# metric -> direction; any numeric metric of evaluate works, these have a known direction
OBJECTIVES = {
    "accuracy": "maximize",
    "top5_accuracy": "maximize",
    "teacher_agreement": "maximize",
    "packed_bytes": "minimize",
    "artifact_bytes": "minimize",
    "latency_b1_p50_ms": "minimize",
    "latency_b1_p95_ms": "minimize",
    "macs_nonzero": "minimize",
    "peak_memory_bytes": "minimize",
}
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "hyperband")
STAGES = ("prune", "distill", "quantize")
DEFAULT_STORAGE = "sqlite:///data/09_search/study.db"
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded with each trial this process runs


@dataclass
class SearchConfig(Config):
    """``space``: ``{dotted key: {choices: [...]}`` or ``{low, high[, log, step]}``}. A key under
    ``<stage>.options.<method>.`` is sampled only in trials whose ``<stage>.method`` is
    ``<method>``. ``n_trials``: the study's budget (finished trials, all workers together);
    ``timeout_s``: this worker's wall-time budget. ``max_accuracy_drop``: a trial whose model
    falls further below the teacher on the validation set after distillation is pruned as hopeless.
    ``choose_within``: the written-back recipe is the smallest (first objective to minimize) Pareto
    trial whose test accuracy is within this of the teacher's."""

    study_name: str = "shrinkflow"
    storage: str | None = None
    n_trials: int = 30
    timeout_s: float | None = None
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "packed_bytes", "latency_b1_p50_ms"])
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "none"
    max_accuracy_drop: float | None = 0.05
    choose_within: float = 0.01
    heartbeat_s: int = 30
    space: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.study_name, str) or not self.study_name:
            raise ConfigError("study_name", self.study_name, "a non-empty name")
        if self.storage is not None and (not isinstance(self.storage, str) or "://" not in self.storage):
            raise ConfigError(
                "storage", self.storage, "null or a database URL (sqlite:///path.db, postgresql://...)"
            )
        check_range("n_trials", self.n_trials, 1, 1_000_000, integer=True)
        if self.timeout_s is not None:
            check_range("timeout_s", self.timeout_s, 0.0, low_open=True)
        if not isinstance(self.objectives, list) or not self.objectives:
            raise ConfigError("objectives", self.objectives, f"a non-empty list from {list(OBJECTIVES)}")
        for i, name in enumerate(self.objectives):
            check_choice(f"objectives[{i}]", name, list(OBJECTIVES))
        if len(set(self.objectives)) != len(self.objectives):
            raise ConfigError("objectives", self.objectives, "each metric once")
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("pruner", self.pruner, PRUNERS)
        if self.pruner != "none" and len(self.objectives) > 1:
            raise ConfigError(
                "pruner", self.pruner, "'none' with several objectives (Optuna pruners need one objective)"
            )
        if self.max_accuracy_drop is not None:
            check_range("max_accuracy_drop", self.max_accuracy_drop, 0.0, 1.0)
        check_range("choose_within", self.choose_within, 0.0, 1.0)
        check_range("heartbeat_s", self.heartbeat_s, 1, 86_400, integer=True)
        if not isinstance(self.space, dict) or not self.space:
            raise ConfigError(
                "space", self.space, "a mapping {dotted parameter key: {choices: [...]} or {low, high}}"
            )
        for key, spec in self.space.items():
            _check_dimension(key, spec)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[name] for name in self.objectives]


def _check_dimension(key: str, spec: Any) -> None:
    where = f"space.{key}"
    if not isinstance(key, str) or key.split(".", 1)[0] not in STAGES or "." not in key:
        raise ConfigError(
            "space", key, f"a dotted key under {list(STAGES)} (prune.options.magnitude.sparsity)"
        )
    if not isinstance(spec, dict):
        raise ConfigError(where, spec, "{choices: [...]} or {low: ..., high: ...}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(where, spec, "{choices: [a non-empty list]} alone")
        return
    if set(spec) - {"low", "high", "log", "step"} or not {"low", "high"} <= set(spec):
        raise ConfigError(where, spec, "{choices: [...]} or {low, high} with optional log and step")
    low, high = spec["low"], spec["high"]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low >= high:
        raise ConfigError(where, spec, "numbers with low < high")
    if spec.get("log") and low <= 0:
        raise ConfigError(where, spec, "low > 0 on a log scale")


def _condition(key: str) -> tuple[str, str] | None:
    """``prune.options.agp.sparsity`` -> (``prune.method``, ``agp``): sampled only for that method."""
    parts = key.split(".")
    if len(parts) >= 4 and parts[1] == "options":
        return f"{parts[0]}.method", parts[2]
    return None


def sample(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One recipe: ``{dotted key: value}`` drawn by ``trial`` (an ``optuna.Trial``), methods
    first, then the options of the methods drawn."""
    values: dict[str, Any] = {}
    for key in sorted(space, key=lambda k: _condition(k) is not None):
        condition = _condition(key)
        if condition is not None and condition[0] in space and values.get(condition[0]) != condition[1]:
            continue
        spec = space[key]
        if "choices" in spec:
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif all(isinstance(spec[k], int) for k in ("low", "high")) and isinstance(spec.get("step", 1), int):
            values[key] = trial.suggest_int(
                key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False)
            )
        else:
            values[key] = trial.suggest_float(
                key, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False)
            )
    return values


def apply(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``params`` (``{stage: block}``) with each dotted key set."""
    out = copy.deepcopy(params)
    for key, value in values.items():
        node = out
        *path, leaf = key.split(".")
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(key, value, f"a key whose parent {part!r} is a mapping, not {child!r}")
            node = child
        node[leaf] = value
    return out


_listeners: list[Callable[[str, dict[str, Any]], None]] = []


@contextmanager
def listen(callback: Callable[[str, dict[str, Any]], None]) -> Iterator[None]:
    """Call ``callback(event, info)`` while the block runs: ``("trial", {number, state, params,
    metrics, values, seconds})`` after each trial this worker runs."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def _roundtrip(model: ModelArtifact) -> ModelArtifact:
    """What the next node loads from the catalog's file."""
    return artifacts.from_bytes(artifacts.to_bytes(model))


class Hopeless(Exception):
    """The recipe is stopped after distillation: too far below the teacher, or a pruner said so."""


def run_recipe(
    params: dict[str, Any],
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    test: Split,
    measure: MeasureConfig,
    seed: int,
    checkpoint: Callable[[float], None] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """(the final model's evaluation, validation accuracy after each stage) for the recipe
    ``params`` (``{prune: ..., distill: ..., quantize: ...}`` blocks), seeded like ``kedro run``.
    ``checkpoint(validation accuracy)`` runs after distillation, before quantization; it raises
    :class:`Hopeless` to stop the recipe there."""
    prune_cfg = PruneStage(**params["prune"])
    distill_cfg = DistillStage(**params["distill"])
    quantize_cfg = QuantizeStage(**params["quantize"])
    progress: dict[str, float] = {}
    seed_everything(node_seed(seed, "prune"))
    pruned = _roundtrip(run_method(prune_cfg, teacher, train, val, train_cfg=prune_cfg.finetune)[0])
    seed_everything(node_seed(seed, "distill"))
    distilled = _roundtrip(distill(teacher, pruned, train, val, distill_cfg)[0])
    progress["distilled"] = evaluate(distilled.model, val)[0]
    if checkpoint is not None:
        checkpoint(progress["distilled"])
    seed_everything(node_seed(seed, "quantize"))
    quantized = _roundtrip(
        run_method(quantize_cfg, distilled, train, val, train_cfg=quantize_cfg.finetune, teacher=teacher)[0]
    )
    seed_everything(node_seed(seed, "quantized.evaluate"))
    return evaluate_artifact(quantized, test, measure, teacher=teacher), progress


@dataclass
class SearchResult:
    """Every trial of the study (all workers), the Pareto front and the chosen recipe."""

    trials: pd.DataFrame
    chosen: dict[str, Any] | None
    teacher: dict[str, Any]
    ran: int = 0
    seconds: float = 0.0
    objectives: list[str] = field(default_factory=list)


def _storage(cfg: SearchConfig) -> Any:
    """Optuna's RDB storage with heartbeats: a trial whose worker died (no heartbeat for twice the
    interval) is marked failed by the next trial to start, and its recipe queued again once."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = cfg.storage or DEFAULT_STORAGE
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=cfg.heartbeat_s,
                    grace_period=2 * cfg.heartbeat_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                    # several workers on one SQLite file wait for its lock instead of failing
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                )
        except Exception as exc:  # SQLAlchemy raises ArgumentError, OperationalError, ImportError ...
            # two workers creating a new database at once: one of them loses the race to create a
            # table or write the schema version ("already exists", UNIQUE constraint); the schema
            # is complete a moment later. A database that stays unreachable fails after ~5 s.
            if type(exc).__name__ in ("IntegrityError", "OperationalError") and attempt < 4:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ConfigError(
                "search.storage", url, f"a database Optuna can open ({type(exc).__name__}: {str(exc)[:300]})"
            ) from exc
    raise AssertionError("unreachable")


def _sampler(cfg: SearchConfig) -> Any:
    import optuna

    if cfg.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=cfg.sampler_seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=cfg.sampler_seed)
    return optuna.samplers.TPESampler(seed=cfg.sampler_seed, multivariate=True, n_startup_trials=8)


def _pruner(cfg: SearchConfig) -> Any:
    import optuna

    return {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
    }[cfg.pruner]()


def run_search(
    cfg: SearchConfig,
    params: dict[str, Any],
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    test: Split,
    measure: MeasureConfig,
    seed: int,
) -> SearchResult:
    """Join (or create) the study ``cfg.study_name`` in ``cfg.storage`` and run trials until the
    study holds ``cfg.n_trials`` finished ones or ``cfg.timeout_s`` passes; then read every trial."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    for key in cfg.space:  # a typo in the space fails before any trial, naming the key
        stage = (
            PruneStage
            if key.startswith("prune.")
            else DistillStage
            if key.startswith("distill.")
            else QuantizeStage
        )
        if key.split(".")[1] not in {f.name for f in stage.__dataclass_fields__.values()}:
            raise ConfigError(f"search.space.{key}", cfg.space[key], f"a key of the {stage.KEY} parameters")
    study = optuna.create_study(
        storage=_storage(cfg),
        study_name=cfg.study_name,
        directions=cfg.directions,
        sampler=_sampler(cfg),
        pruner=_pruner(cfg),
        load_if_exists=True,
    )
    seed_everything(node_seed(seed, "teacher.evaluate"))
    reference = evaluate_artifact(teacher, test, measure, teacher=teacher)
    teacher_val = evaluate(teacher.model, val)[0]
    study.set_user_attr("teacher", {k: reference[k] for k in cfg.objectives})
    floor = None if cfg.max_accuracy_drop is None else teacher_val - cfg.max_accuracy_drop
    ran = 0

    def objective(trial: optuna.Trial) -> tuple[float, ...] | float:
        nonlocal ran
        ran += 1
        start = time.perf_counter()
        trial.set_user_attr("worker", WORKER)
        values = sample(trial, cfg.space)
        recipe = apply(params, values)
        info: dict[str, Any] = {"number": trial.number, "params": values}

        def checkpoint(accuracy: float) -> None:
            if floor is not None and accuracy < floor:
                raise Hopeless(f"validation accuracy {accuracy:.4f} after distillation is below {floor:.4f}")
            if len(cfg.objectives) == 1:  # Optuna's pruners compare trials at the same step
                trial.report(accuracy, step=0)
                if trial.should_prune():
                    raise Hopeless(f"the {cfg.pruner} pruner stopped it after distillation ({accuracy:.4f})")

        try:
            metrics, _ = run_recipe(recipe, teacher, train, val, test, measure, seed, checkpoint)
        except Hopeless as exc:
            trial.set_user_attr("pruned_because", str(exc))
            _notify(
                "trial", {**info, "state": "PRUNED", "metrics": {}, "seconds": time.perf_counter() - start}
            )
            raise optuna.TrialPruned(str(exc)) from None
        numbers = {
            k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        trial.set_user_attr("metrics", numbers)
        trial.set_user_attr("recipe", {stage: recipe[stage] for stage in STAGES})
        result = tuple(numbers[name] for name in cfg.objectives)
        _notify(
            "trial",
            {
                **info,
                "state": "COMPLETE",
                "metrics": numbers,
                "values": result,
                "seconds": time.perf_counter() - start,
            },
        )
        return result if len(result) > 1 else result[0]

    start = time.perf_counter()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if len(study.get_trials(deepcopy=False, states=finished)) < cfg.n_trials:  # optimize runs one at least
        study.optimize(
            objective,
            timeout=cfg.timeout_s,
            callbacks=[MaxTrialsCallback(cfg.n_trials, states=finished)],
            catch=(),
        )
    trials = table(study, cfg)
    return SearchResult(
        trials=trials,
        chosen=choose(trials, reference, cfg),
        teacher=reference,
        ran=ran,
        seconds=time.perf_counter() - start,
        objectives=list(cfg.objectives),
    )


def _notify(event: str, info: dict[str, Any]) -> None:
    for callback in list(_listeners):
        callback(event, info)


def table(study: Any, cfg: SearchConfig) -> pd.DataFrame:
    """One row per trial: number, state, the sampled values, every metric, ``pareto``."""
    front = {t.number for t in study.best_trials} if study.trials else set()
    rows = []
    for t in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "pareto": t.number in front,
            "worker": t.user_attrs.get("worker"),
        }
        row.update({f"param.{k}": v for k, v in t.params.items()})
        row.update(t.user_attrs.get("metrics", {}))
        row["seconds"] = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else math.nan
        )
        row["recipe"] = t.user_attrs.get("recipe")
        row["params"] = dict(t.params)
        rows.append(row)
    return pd.DataFrame(rows)


def choose(trials: pd.DataFrame, teacher: dict[str, Any], cfg: SearchConfig) -> dict[str, Any] | None:
    """The Pareto trial to write back: within ``choose_within`` of the teacher's accuracy, the
    best on the first objective that is minimized (packed bytes by default), ties to accuracy;
    with none within reach, the most accurate. None when no trial finished."""
    done = trials[(trials["state"] == "COMPLETE") & trials["pareto"]] if len(trials) else trials
    if not len(done):
        return None
    key = next((name for name in cfg.objectives if OBJECTIVES[name] == "minimize"), "packed_bytes")
    close = done[done["accuracy"] >= teacher["accuracy"] - cfg.choose_within - 1e-12]
    pick = (
        close.sort_values([key, "accuracy"], ascending=[True, False]).iloc[0]
        if len(close)
        else done.sort_values("accuracy", ascending=False).iloc[0]
    )
    skip = ("number", "recipe", "params", "state", "pareto", "seconds", "worker")
    return {
        "number": int(pick["number"]),
        "within_reach": bool(len(close)),
        "recipe": pick["recipe"],
        "params": pick["params"],
        "metrics": {
            str(k): float(pick[k])
            for k in trials.columns
            if k not in skip and not str(k).startswith("param.") and _is_number(pick[k])
        },
    }


def _is_number(value: Any) -> bool:
    """A real number, Python's or numpy's (pandas rows hold numpy scalars), and not NaN."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and not pd.isna(value)


def run_config(chosen: dict[str, Any], seed: int) -> dict[str, Any]:
    """The chosen recipe as a ``kedro run --config`` file: ``run.params`` holds the full
    prune/distill/quantize blocks (they deep-merge over the environment's parameters)."""
    return {"run": {"params": {"seed": seed, **chosen["recipe"]}}}


def front_figure(result: SearchResult) -> Any:
    """Accuracy against packed size for every finished trial: the trials Pareto-optimal on all
    objectives marked, the accuracy-size front as a step line, the teacher and the chosen trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    trials = result.trials
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    if len(done):
        axes.scatter(done["packed_bytes"], 100 * done["accuracy"], c="#9aa5b1", s=22, label="trial")
        optimal = done[done["pareto"]]
        axes.scatter(
            optimal["packed_bytes"],
            100 * optimal["accuracy"],
            c="#1f77b4",
            s=26,
            label="Pareto-optimal (all objectives)",
        )
        # the two-objective front drawn here: each step is more accurate than every smaller trial
        ordered = done.sort_values(["packed_bytes", "accuracy"], ascending=[True, False])
        front = ordered[ordered["accuracy"] > ordered["accuracy"].cummax().shift(fill_value=-1.0)]
        axes.step(
            front["packed_bytes"],
            100 * front["accuracy"],
            where="post",
            c="#1f77b4",
            lw=1.2,
            label="front: accuracy vs size",
        )
    axes.scatter(
        [result.teacher["packed_bytes"]],
        [100 * result.teacher["accuracy"]],
        marker="*",
        s=140,
        c="#d62728",
        label="teacher",
    )
    if result.chosen:
        m = result.chosen["metrics"]
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
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"Recipe search: {len(done)} finished trials")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
