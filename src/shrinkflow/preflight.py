"""Checks that run before any node: the configured models fit the data.

Kedro validates each stage's parameter block when the context is created (unknown method or
model names, wrong import paths, kwargs a factory does not take fail there). What needs the data
is checked here, in ``before_pipeline_run``, so a model that cannot take the data's batches, or
returns logits for another number of classes, fails before ``split_data`` rewrites
``data/05_model_input`` and before minutes of training. So does a compression method that cannot
apply to the model (a plugin's ``check``: e.g. static int8 on a model ``torch.export`` cannot
capture), on the architecture the method will receive: the distillation student where one is
declared, else the teacher.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from kedro.framework.hooks import hook_impl

from shrinkflow import plugins
from shrinkflow.core.artifact import load_pretrained
from shrinkflow.core.data import RawData, Split, modality
from shrinkflow.core.models import ModelChoice, build_model, check_forward
from shrinkflow.core.runtime import RuntimeConfig

__all__ = ["PreflightHook", "data_shape"]

log = logging.getLogger(__name__)

#: nodes that build a model from configuration, and the parameter holding it
_BUILDERS = {"train_teacher": ("train_teacher", "model"), "distill": ("distill", "student")}
#: method stages in pipeline order: (node, parameter block)
_METHOD_STAGES = (("prune", "prune"), ("distill", "distill"), ("quantize", "quantize"))


def data_shape(
    pipeline_nodes: set[str], catalog: Any, params: dict[str, Any]
) -> tuple[tuple[int, ...], int] | None:
    """The input shape and class count the models will see: from the raw data when this run
    splits it (``data.channels`` applied), else from the stored training split. None when the data
    cannot be read here (the data node then reports why)."""
    facts = _data_facts(pipeline_nodes, catalog, params)
    return None if facts is None else facts[:2]


def _data_facts(
    pipeline_nodes: set[str], catalog: Any, params: dict[str, Any]
) -> tuple[tuple[int, ...], int, str] | None:
    """:func:`data_shape` and the data's modality (image, table, text)."""
    try:
        if "split_data" in pipeline_nodes:
            raw = catalog.get("raw_data").load()  # the dataset itself: its validator runs in the node
            if not isinstance(raw, RawData):
                return None
            data = params.get("data")
            split = Split(
                raw.data,
                torch.arange(min(2, len(raw.data))),
                transforms=tuple(getattr(data, "transforms", ())),
                channels=getattr(data, "channels", None),
            )
        else:
            split = catalog.get("train_set").load()
            if not isinstance(split, Split):
                return None
        # reads a sample (decodes an image file): an empty set or an unreadable file fails here too
        facts = split.input_shape, int(split.num_classes), modality(split)
    except Exception as exc:  # missing or bad data is the data node's error to report, with its suite
        log.debug("preflight: data not readable before the run (%s: %s)", type(exc).__name__, exc)
        return None
    return facts


class PreflightHook:
    """Builds each configured model once and runs it on a zero batch of the data's shape."""

    def __init__(self) -> None:
        self._params: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._params = context.params

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        names = {n.name for n in pipeline.nodes}
        self._check_devices(names)
        methods = self._checked_methods(names)
        choices = []
        for node, (block, key) in _BUILDERS.items():
            choice = getattr(self._params.get(block), key, None)
            if (node in names or methods) and isinstance(choice, ModelChoice):
                choices.append((f"{block}.{key}", choice))
        if not choices:
            return
        facts = _data_facts(names, catalog, self._params)
        if facts is None:
            return
        input_shape, num_classes, kind = facts
        models = {}
        for where, choice in choices:
            try:
                spec = choice.spec_for(input_shape, kind)
                model = build_model(spec, input_shape, num_classes)
                if choice.pretrained is not None:
                    load_pretrained(model, choice.pretrained)
                check_forward(model, choice.spec, input_shape, num_classes)
            except ValueError as exc:  # ConfigError, ArtifactError
                raise PreflightError(f"{where}: {exc}") from exc
            models[where] = model
            log.info(
                "preflight: %s %s takes %s inputs, %d classes", where, choice.name, input_shape, num_classes
            )
        for block, stage, plugin in methods:
            # the architecture the method receives: a declared student from distillation on
            where = (
                "distill.student"
                if block != "prune" and "distill.student" in models
                else "train_teacher.model"
            )
            if where not in models:
                continue
            try:
                plugin.check(copy.deepcopy(models[where]), stage.method_config, input_shape)
            except ValueError as exc:
                raise PreflightError(f"{block}.method={stage.method} on {where}: {exc}") from exc
            log.info("preflight: %s %s applies to %s", block, stage.method, where)

    def _check_devices(self, names: set[str]) -> None:
        """Resolve the device and precision of every stage this run trains or evaluates: a GPU the
        machine lacks fails here, naming the key, not after the stages before it have run."""
        run = self._params.get("runtime")
        if not isinstance(run, RuntimeConfig):
            return
        try:
            if any(name.endswith("evaluate") for name in names):
                run.resolve()
            for block in ("train_teacher", "prune", "distill", "quantize"):
                stage = self._params.get(block)
                if block in names and hasattr(stage, "runtime"):
                    stage.runtime(run)
        except ValueError as exc:  # ConfigError
            raise PreflightError(str(exc)) from exc

    def _checked_methods(self, names: set[str]) -> list[tuple[str, Any, Any]]:
        """(block, stage config, plugin) of the configured methods in this run that have a check."""
        out = []
        for node, block in _METHOD_STAGES:
            stage = self._params.get(block)
            method = getattr(stage, "method", "none")
            if node not in names or method == "none" or not hasattr(stage, "FAMILY"):
                continue
            plugin = plugins.load(stage.FAMILY, method)
            if plugin.check is not None:
                out.append((block, stage, plugin))
        return out


class PreflightError(ValueError):
    """A configured model does not fit the data; raised before any node runs."""
