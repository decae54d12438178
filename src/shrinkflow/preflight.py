"""Checks that run before any node: the configured models fit the data.

Kedro validates each stage's parameter block when the context is created (unknown method or
model names, wrong import paths, kwargs a factory does not take fail there). What needs the data
is checked here, in ``before_pipeline_run``, so a model that cannot take the data's batches, or
returns logits for another number of classes, fails before ``split_data`` rewrites
``data/05_model_input`` and before minutes of training.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from shrinkflow.core.artifact import load_pretrained
from shrinkflow.core.data import RawData, Split, with_channels
from shrinkflow.core.models import ModelChoice, build_model, check_forward

__all__ = ["PreflightHook", "data_shape"]

log = logging.getLogger(__name__)

#: nodes that build a model from configuration, and the parameter holding it
_BUILDERS = {"train_teacher": ("train_teacher", "model"), "distill": ("distill", "student")}


def data_shape(
    pipeline_nodes: set[str], catalog: Any, params: dict[str, Any]
) -> tuple[tuple[int, ...], int] | None:
    """The input shape and class count the models will see: from the raw data when this run
    splits it (``data.channels`` applied), else from the stored training split. None when the data
    cannot be read here (the data node then reports why)."""
    try:
        if "split_data" in pipeline_nodes:
            raw = catalog.get("raw_data").load()  # the dataset itself: its validator runs in the node
            if not isinstance(raw, RawData):
                return None
            split = with_channels(raw.data.subset(2), getattr(params.get("data"), "channels", None))
        else:
            split = catalog.get("train_set").load()
            if not isinstance(split, Split):
                return None
    except Exception as exc:  # missing or bad data is the data node's error to report, with its suite
        log.debug("preflight: data not readable before the run (%s: %s)", type(exc).__name__, exc)
        return None
    return tuple(int(d) for d in split.x.shape[1:]), int(split.num_classes)


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
        choices = []
        for node, (block, key) in _BUILDERS.items():
            choice = getattr(self._params.get(block), key, None)
            if node in names and isinstance(choice, ModelChoice):
                choices.append((f"{block}.{key}", choice))
        if not choices:
            return
        shape = data_shape(names, catalog, self._params)
        if shape is None:
            return
        input_shape, num_classes = shape
        for where, choice in choices:
            try:
                model = build_model(choice.spec_for(input_shape), input_shape, num_classes)
                if choice.pretrained is not None:
                    load_pretrained(model, choice.pretrained)
                check_forward(model, choice.spec, input_shape, num_classes)
            except ValueError as exc:  # ConfigError, ArtifactError
                raise PreflightError(f"{where}: {exc}") from exc
            log.info(
                "preflight: %s %s takes %s inputs, %d classes", where, choice.name, input_shape, num_classes
            )


class PreflightError(ValueError):
    """A configured model does not fit the data; raised before any node runs."""
