"""The declared space: drawing a recipe with an Optuna trial and applying it over the parameters."""

from __future__ import annotations

import copy
from typing import Any

from shrinkflow.core.config import ConfigError
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage

__all__ = ["apply", "check_keys", "sample"]


def _condition(key: str) -> tuple[str, str] | None:
    """``prune.options.agp.sparsity`` -> (``prune.method``, ``agp``): sampled only for that method."""
    parts = key.split(".")
    if len(parts) >= 4 and parts[1] == "options":
        return f"{parts[0]}.method", parts[2]
    return None


def check_keys(space: dict[str, Any]) -> None:
    """A typo in the space fails before any trial, naming the key."""
    for key in space:
        stage = (
            PruneStage
            if key.startswith("prune.")
            else DistillStage
            if key.startswith("distill.")
            else QuantizeStage
        )
        if key.split(".")[1] not in {f.name for f in stage.__dataclass_fields__.values()}:
            raise ConfigError(f"search.space.{key}", space[key], f"a key of the {stage.KEY} parameters")


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
