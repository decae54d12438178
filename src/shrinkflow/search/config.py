"""The search's configuration: objectives, constraints, the choice rule and the declared space."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range

__all__ = [
    "CHOICES",
    "DEFAULT_STORAGE",
    "METRICS",
    "OBJECTIVES",
    "PRUNERS",
    "RUNTIME_METRICS",
    "SAMPLERS",
    "STAGES",
    "Constraint",
    "SearchConfig",
]

#: metric -> direction. Every one is measured for each trial on the validation split (accuracies)
#: or on the trial's model itself (sizes, MACs, speed); ``accuracy_drop_pp`` is the teacher's
#: validation accuracy minus the trial's, in points.
OBJECTIVES = {
    "accuracy": "maximize",
    "top5_accuracy": "maximize",
    "teacher_agreement": "maximize",
    "accuracy_drop_pp": "minimize",
    "packed_bytes": "minimize",
    "artifact_bytes": "minimize",
    "params_nonzero": "minimize",
    "macs": "minimize",
    "macs_nonzero": "minimize",
    "latency_b1_p50_ms": "minimize",
    "latency_b1_p95_ms": "minimize",
    "peak_memory_bytes": "minimize",
    "onnx_latency_b1_ms": "minimize",
    "onnx_throughput_sps": "maximize",
    "onnx_agreement": "maximize",
}
#: measured on the runtime the model is deployed on: the trial's model exported to ONNX (as
#: ``export`` configures it) and run by ONNX Runtime; a trial exports only when one is asked for.
RUNTIME_METRICS = ("onnx_latency_b1_ms", "onnx_throughput_sps", "onnx_agreement")
#: what a constraint may bound
METRICS = tuple(OBJECTIVES)
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "hyperband")
CHOICES = ("most_accurate", "smallest")
STAGES = ("prune", "distill", "quantize")
DEFAULT_STORAGE = "sqlite:///data/09_search/study.db"
_CONSTRAINT = re.compile(r"\s*([a-z0-9_]+)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``, read from the trial's validation metrics."""

    metric: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: Any, where: str) -> Constraint:
        match = _CONSTRAINT.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(where, text, "'<metric> <= <number>' or '<metric> >= <number>'")
        metric, op, bound = match.group(1), match.group(2), float(match.group(3))
        check_choice(f"{where} metric", metric, list(METRICS))
        return cls(metric, op, bound)

    def violation(self, metrics: dict[str, float]) -> float:
        """Optuna's convention: <= 0 when the constraint holds, else by how much it is missed;
        +inf when the metric is missing or NaN (the trial did not measure it)."""
        value = metrics.get(self.metric, math.nan)
        if value is None or math.isnan(value):
            return math.inf
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


@dataclass
class SearchConfig(Config):
    """``space``: ``{dotted key: {choices: [...]}`` or ``{low, high[, log, step]}``}. A key under
    ``<stage>.options.<method>.`` is sampled only in trials whose ``<stage>.method`` is
    ``<method>``. ``n_trials``: the study's budget (finished trials, all workers together);
    ``timeout_s``: this worker's wall-time budget. ``max_accuracy_drop``: a trial whose model
    falls further below the teacher on the validation set after distillation is pruned as hopeless.

    Every objective, constraint and the choice read the *validation* split; the test split is
    evaluated once, after the trials, for the chosen trial and the Pareto trials.
    ``constraints``: ``["onnx_latency_b1_ms <= 0.05", "accuracy_drop_pp <= 0.5"]``; a trial that
    misses one is infeasible (its constraint values steer Optuna's TPE and NSGA-II samplers away)
    and is never chosen. ``choose``: ``most_accurate`` writes back the most accurate feasible trial
    (ties: the smaller on the first minimized objective); ``smallest`` the feasible trial best on the
    first minimized objective (packed bytes by default) among those within ``choose_within`` of the
    teacher's validation accuracy, or the most accurate feasible one when none is."""

    study_name: str = "shrinkflow"
    storage: str | None = None
    n_trials: int = 30
    timeout_s: float | None = None
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "packed_bytes", "onnx_latency_b1_ms"])
    constraints: list[str] = field(default_factory=list)
    choose: str = "smallest"
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
        if not isinstance(self.constraints, list):
            raise ConfigError("constraints", self.constraints, "a list like ['onnx_latency_b1_ms <= 0.05']")
        for i, text in enumerate(self.constraints):
            Constraint.parse(text, f"constraints[{i}]")
        check_choice("choose", self.choose, CHOICES)
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

    @property
    def parsed_constraints(self) -> list[Constraint]:
        return [Constraint.parse(text, f"constraints[{i}]") for i, text in enumerate(self.constraints)]

    @property
    def needs_runtime(self) -> bool:
        """Whether a trial must export its model: an objective or a constraint reads ONNX Runtime."""
        wanted = set(self.objectives) | {c.metric for c in self.parsed_constraints}
        return bool(wanted & set(RUNTIME_METRICS))

    @property
    def size_key(self) -> str:
        """The first minimized objective: what ``smallest`` minimizes (packed bytes without one)."""
        return next((n for n in self.objectives if OBJECTIVES[n] == "minimize"), "packed_bytes")


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
