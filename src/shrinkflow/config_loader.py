"""Kedro's config loader, with ``--params`` applied after the environments are merged.

Kedro 1.7's ``OmegaConfigLoader`` merges the runtime parameters (``kedro run --params``) into the
base parameters and, separately, into the run environment's, and only then merges the two
environments, destructively by top-level key (its documented default for parameters). So in an
environment with no parameters file for a stage, ``--params quantize.method=static_int8`` creates
``quantize: {method: static_int8}`` in the environment's layer, which then *replaces* the whole
base ``quantize`` block: its ``options`` and ``finetune`` vanish and code defaults apply silently.

Here the environments are merged first (unchanged: an environment's block still replaces the base
block of the same name) and ``--params`` is deep-merged on top, so a dotted key overrides exactly
one value in every environment. The ``${runtime_params:...}`` resolver works as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import DictConfig, OmegaConf

__all__ = ["ShrinkflowConfigLoader"]

PARAMETERS = "parameters"


class ShrinkflowConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` whose runtime parameters override single keys after the environments
    are merged (see the module docstring)."""

    def _merge_and_resolve(self, key: str, config_per_file: dict[Path, DictConfig]) -> dict[str, Any]:
        if key != PARAMETERS:
            return super()._merge_and_resolve(key, config_per_file)
        # each layer without the runtime parameters; they are applied once, in __getitem__
        if not config_per_file:
            return {}
        merged = OmegaConf.to_container(OmegaConf.unsafe_merge(*config_per_file.values()), resolve=True)
        assert isinstance(merged, dict)
        return merged  # type: ignore[return-value]

    def __getitem__(self, key: str) -> Any:
        config = super().__getitem__(key)
        if key != PARAMETERS or not self.runtime_params or key in self.data:
            return config
        merged = OmegaConf.unsafe_merge(OmegaConf.create(config), OmegaConf.create(self.runtime_params))
        return OmegaConf.to_container(merged, resolve=True)
