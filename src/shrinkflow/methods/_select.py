"""Choosing the layers a method acts on: validation of the ``exclude`` option shared by methods."""

from __future__ import annotations

from typing import Any

from torch import nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.sparsity import prunable

__all__ = ["check_names", "select_layers"]


def check_names(key: str, value: Any) -> list[str]:
    """Config check: ``value`` must be a list of module names (strings)."""
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise ConfigError(key, value, "a list of module names")
    return value


def select_layers(
    model: nn.Module, exclude: list[str], key: str = "exclude", require: bool = True
) -> list[tuple[str, nn.Module]]:
    """(name, module) of the prunable layers not in ``exclude``, in module order.

    Unknown names fail listing the prunable layers (a typo must not silently leave a layer dense);
    with ``require`` an exclusion that leaves no layer fails too.
    """
    names = [name for name, _ in prunable(model)]
    unknown = sorted(set(exclude) - set(names))
    if unknown:
        raise ConfigError(key, unknown, f"names of prunable layers {names}")
    layers = [(name, m) for name, m in prunable(model) if name not in exclude]
    if require and not layers:
        raise ConfigError(key, exclude, "to leave at least one prunable layer")
    return layers
