"""The plugin registry: entry-point discovery, lookup by name, clear errors.

Each family is one entry-point group. Built-ins register through shrinkflow's own ``pyproject.toml``
exactly like third-party packages, so there is one code path. Entry points are *listed* eagerly
(cheap metadata) but *loaded* only when a name is looked up, so a plugin's heavy optional
dependencies are imported only when a configuration asks for it.

This module imports neither kedro nor mlflow: the core library and the methods use it too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = [
    "DATASETS",
    "DISTILLERS",
    "FAMILIES",
    "MODELS",
    "PRUNERS",
    "QUANTIZERS",
    "RUNTIMES",
    "PluginError",
    "PluginInfo",
    "available",
    "info",
    "load",
    "load_object",
]

PRUNERS = "shrinkflow.pruners"
QUANTIZERS = "shrinkflow.quantizers"
DISTILLERS = "shrinkflow.distillers"
MODELS = "shrinkflow.models"
DATASETS = "shrinkflow.datasets"
#: serving runtimes the deployment measures and picks from (shrinkflow.core.deploy)
RUNTIMES = "shrinkflow.runtimes"
FAMILIES = (PRUNERS, QUANTIZERS, DISTILLERS, MODELS, DATASETS, RUNTIMES)


class PluginError(LookupError):
    """A plugin name is unknown, registered twice, or fails to load."""


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from: recorded with every run and artifact."""

    group: str
    name: str
    value: str
    distribution: str
    version: str

    def to_dict(self) -> dict[str, str]:
        return {
            "group": self.group,
            "name": self.name,
            "value": self.value,
            "distribution": self.distribution,
            "version": self.version,
        }


def _info(group: str, ep: EntryPoint) -> PluginInfo:
    dist = ep.dist
    return PluginInfo(
        group=group,
        name=ep.name,
        value=ep.value,
        distribution=dist.name if dist is not None else "unknown",
        version=dist.version if dist is not None else "unknown",
    )


@cache
def _registry(group: str) -> dict[str, PluginInfo]:
    if group not in FAMILIES:
        raise PluginError(f"unknown plugin family {group!r}: expected one of {list(FAMILIES)}")
    found: dict[str, PluginInfo] = {}
    for ep in entry_points(group=group):
        new = _info(group, ep)
        old = found.get(ep.name)
        # The same distribution can be seen twice (e.g. an editable install plus a stale
        # egg-info); only a name claimed by two different targets is a real conflict.
        if old is not None and old.value != new.value:
            raise PluginError(
                f"{group} plugin {ep.name!r} is registered twice: by {old.distribution} "
                f"{old.version} ({old.value}) and by {new.distribution} {new.version} ({new.value}); "
                "uninstall one of them or rename its entry point"
            )
        found[ep.name] = new
    return found


def refresh() -> None:
    """Forget cached discoveries (after installing a plugin into a running interpreter)."""
    _registry.cache_clear()
    _load.cache_clear()


def available(group: str) -> list[str]:
    """Sorted names registered in ``group``."""
    return sorted(_registry(group))


def info(group: str, name: str) -> PluginInfo:
    """Registration facts of one plugin; unknown names list the available ones."""
    found = _registry(group)
    if name not in found:
        family = group.rsplit(".", 1)[-1]
        raise PluginError(
            f"unknown {family[:-1]} {name!r}: available {family} are {sorted(found)} "
            f"(entry-point group {group!r})"
        )
    return found[name]


@cache
def _load(group: str, name: str) -> Any:
    return load_object(info(group, name).value)


def load(group: str, name: str) -> Any:
    """Import and return the object registered as ``name`` in ``group``."""
    return _load(group, name)


def load_object(path: str) -> Any:
    """Import ``package.module:attribute`` (the entry-point syntax)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"import path {path!r} is invalid: expected 'package.module:Attribute'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"import path {path!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"import path {path!r}: module {module_name!r} has no {attr!r}") from None
    return obj
