"""`--params` overrides exactly one key in every environment (src/shrinkflow/config_loader.py)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from kedro.config import OmegaConfigLoader

from shrinkflow import settings
from shrinkflow.config_loader import ShrinkflowConfigLoader

CONF = Path(__file__).resolve().parents[1] / "conf"
ENVS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
SENTINEL = "__override__"


def _loader(env: str, runtime: dict[str, Any] | None = None, cls: type = ShrinkflowConfigLoader) -> Any:
    args = {k: v for k, v in settings.CONFIG_LOADER_ARGS.items()}
    return cls(conf_source=str(CONF), env=env, runtime_params=runtime or {}, **args)


def _leaves(block: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(block, dict) and block:
        return [leaf for k, v in block.items() for leaf in _leaves(v, (*prefix, str(k)))]
    return [prefix]


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def test_settings_use_the_loader() -> None:
    assert settings.CONFIG_LOADER_CLASS is ShrinkflowConfigLoader


@pytest.mark.parametrize("env", ENVS)
def test_one_dotted_key_overrides_one_value_in_every_stage_block(env: str) -> None:
    params = _loader(env)["parameters"]
    blocks = {k: v for k, v in params.items() if isinstance(v, dict)}
    assert {"train_teacher", "prune", "distill", "quantize", "evaluate", "export"} <= set(blocks)
    checked = 0
    for name, block in blocks.items():
        leaves = _leaves(block, (name,))
        # the first and the deepest key of each block: a top-level option and a method's option
        for path in {leaves[0], max(leaves, key=len)}:
            got = _loader(env, _nested(path, SENTINEL))["parameters"]
            assert got == _set(params, path, SENTINEL), f"{env}: --params {'.'.join(path)}"
            checked += 1
    assert checked >= len(blocks)


def test_kedros_own_loader_drops_the_block_this_one_keeps() -> None:
    """The defect this loader fixes: in an environment without a quantize file, Kedro's loader
    replaces the whole base block by the one overridden key."""
    env = "mnist"  # has parameters files for data, teacher, prune and distill only
    assert not any("quantize" in p.read_text() for p in (CONF / env).glob("parameters*.yml"))
    runtime = {"quantize": {"method": "dynamic_int8"}}
    assert _loader(env, runtime, OmegaConfigLoader)["parameters"]["quantize"] == {"method": "dynamic_int8"}
    ours = _loader(env, runtime)["parameters"]["quantize"]
    assert ours["method"] == "dynamic_int8"
    assert ours["options"] == _loader(env)["parameters"]["quantize"]["options"]
    assert "finetune" in ours


def test_runtime_params_resolver_still_resolves() -> None:
    catalog = _loader("mnist", {"mnist_dir": "/elsewhere"})["catalog"]
    assert catalog["raw_data"]["options"]["path"] == "/elsewhere"
