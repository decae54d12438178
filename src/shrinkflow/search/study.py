"""The Optuna study: its storage, sampler and pruner, the trials this worker runs, and the
once-only test evaluation of the chosen and Pareto trials after them."""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkflow.core import artifact as artifacts
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split
from shrinkflow.core.export import ExportConfig, ExportError
from shrinkflow.core.measure import MeasureConfig
from shrinkflow.core.progress import TrialBar
from shrinkflow.search.config import DEFAULT_STORAGE, STAGES, SearchConfig
from shrinkflow.search.results import choose, table, with_test
from shrinkflow.search.space import apply, check_keys, sample
from shrinkflow.search.trial import Hopeless, build_recipe, measure_split, notify, runtime_metrics

__all__ = ["WORKER", "SearchResult", "run_search"]

WORKER = f"{socket.gethostname()}:{os.getpid()}"  # recorded with each trial this process runs
_TESTED = "test.trial."  # study user attribute: the test metrics of a trial, computed once


@dataclass
class SearchResult:
    """Every trial of the study (all workers), the chosen recipe and the teacher's metrics
    (``{"val": ..., "test": ...}``)."""

    trials: pd.DataFrame
    chosen: dict[str, Any] | None
    teacher: dict[str, dict[str, float]]
    ran: int = 0
    seconds: float = 0.0
    objectives: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)


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
    """TPE and NSGA-II read the constraint values each trial sets (``Trial.set_constraint``, Optuna
    5's successor to ``constraints_func``) and steer away from infeasible recipes; random sampling
    draws blindly, and feasibility is applied when choosing."""
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
    export: ExportConfig | None = None,
) -> SearchResult:
    """Join (or create) the study ``cfg.study_name`` in ``cfg.storage`` and run trials until the
    study holds ``cfg.n_trials`` finished ones or ``cfg.timeout_s`` passes; then read every trial,
    choose on validation figures, and evaluate the chosen and Pareto trials on ``test`` once.
    ``export`` configures the ONNX export the runtime objectives time (the ``export`` parameters)."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    check_keys(cfg.space)
    export = export or ExportConfig()
    constraints = cfg.parsed_constraints
    study = optuna.create_study(
        storage=_storage(cfg),
        study_name=cfg.study_name,
        directions=cfg.directions,
        sampler=_sampler(cfg),
        pruner=_pruner(cfg),
        load_if_exists=True,
    )
    reference = measure_split(teacher, val, measure, teacher, seed, node="teacher.evaluate")
    if cfg.needs_runtime:
        reference.update(runtime_metrics(teacher, train, val, measure, export))
    reference["accuracy_drop_pp"] = 0.0
    study.set_user_attr("teacher", {k: reference.get(k) for k in cfg.objectives})
    floor = None if cfg.max_accuracy_drop is None else reference["accuracy"] - cfg.max_accuracy_drop
    models: dict[int, bytes] = {}  # this worker's finished models, for the test evaluation
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
            model, _ = build_recipe(recipe, teacher, train, val, seed, checkpoint)
            metrics = measure_split(model, val, measure, teacher, seed)
            metrics["accuracy_drop_pp"] = 100.0 * (reference["accuracy"] - metrics["accuracy"])
            if cfg.needs_runtime:
                metrics.update(runtime_metrics(model, train, val, measure, export))
        except (Hopeless, ExportError) as exc:
            reason = str(exc) if isinstance(exc, Hopeless) else f"its model cannot be exported: {exc}"
            trial.set_user_attr("pruned_because", reason)
            notify(
                "trial", {**info, "state": "PRUNED", "metrics": {}, "seconds": time.perf_counter() - start}
            )
            raise optuna.TrialPruned(reason) from None
        trial.set_user_attr("metrics", metrics)
        violations = [c.violation(metrics) for c in constraints]
        for constraint, violation in zip(constraints, violations, strict=True):
            trial.set_constraint(str(constraint), violation)
        trial.set_user_attr("constraint", violations)
        trial.set_user_attr("recipe", {stage: recipe[stage] for stage in STAGES})
        models[trial.number] = artifacts.to_bytes(model)
        result = tuple(metrics[name] for name in cfg.objectives)
        notify(
            "trial",
            {
                **info,
                "state": "COMPLETE",
                "metrics": {f"val.{k}": v for k, v in metrics.items()},
                "values": result,
                "seconds": time.perf_counter() - start,
            },
        )
        return result if len(result) > 1 else result[0]

    start = time.perf_counter()
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    if len(study.get_trials(deepcopy=False, states=finished)) < cfg.n_trials:  # optimize runs one at least
        with TrialBar(cfg.n_trials) as bar:
            show = partial(_show_progress, bar, cfg.objectives, finished)
            show(study)
            study.optimize(
                objective,
                timeout=cfg.timeout_s,
                callbacks=[MaxTrialsCallback(cfg.n_trials, states=finished), lambda s, _t: show(s)],
                catch=(),
            )
    trials = table(study, cfg)
    chosen = choose(trials, reference, cfg)
    wanted = set(trials.loc[trials["pareto"], "number"].astype(int)) if len(trials) else set()
    wanted |= {chosen["number"]} if chosen else set()
    tested = _test_once(study, trials, sorted(wanted), models, teacher, train, val, test, measure, seed)
    if chosen:  # chosen on validation figures alone; its test figures are only reported
        chosen["test"] = dict(tested[chosen["number"]])
    return SearchResult(
        trials=with_test(trials, tested),
        chosen=chosen,
        teacher={
            "val": reference,
            "test": measure_split(teacher, test, measure, teacher, seed, "teacher.evaluate"),
        },
        ran=ran,
        seconds=time.perf_counter() - start,
        objectives=list(cfg.objectives),
        constraints=list(cfg.constraints),
    )


def _show_progress(bar: TrialBar, objectives: list[str], finished: tuple[Any, ...], study: Any) -> None:
    """The trial bar after a trial (any worker's): finished trials, and the best value so far."""
    done = study.get_trials(deepcopy=False, states=finished)
    best = ""
    try:
        if len(objectives) == 1:
            best = f"best {objectives[0]} {study.best_value:.4g}"
        else:
            best = f"{len(study.best_trials)} on the Pareto front"
    except ValueError:  # no complete (or no feasible) trial yet
        pass
    bar.update(len(done), best)


def _test_once(
    study: Any,
    trials: pd.DataFrame,
    numbers: list[int],
    models: dict[int, bytes],
    teacher: ModelArtifact,
    train: Split,
    val: Split,
    test: Split,
    measure: MeasureConfig,
    seed: int,
) -> dict[int, dict[str, float]]:
    """Test metrics of the trials ``numbers``, each computed once per study: kept as a study user
    attribute, so later workers and re-runs read them. A model this worker did not build (another
    worker's trial) is rebuilt from its recipe, which reproduces it exactly (seeded as it ran)."""
    known = study.user_attrs
    recipes = dict(zip(trials["number"].astype(int), trials["recipe"], strict=True))
    out: dict[int, dict[str, float]] = {}
    for number in numbers:
        key = f"{_TESTED}{number}"
        if key not in known:
            if number in models:
                model = artifacts.from_bytes(models[number])
            else:
                model, _ = build_recipe(recipes[number], teacher, train, val, seed)
            study.set_user_attr(key, measure_split(model, test, measure, teacher, seed))
            known = study.user_attrs
        out[number] = dict(known[key])
    return out
