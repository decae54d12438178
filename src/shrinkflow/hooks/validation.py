"""Great Expectations: the catalog validators' suites, and the Data Docs when the run ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from shrinkflow.core import distributed

log = logging.getLogger(__name__)


class ValidationHook:
    """Great Expectations suites for the catalog's ``validator:`` entries; Data Docs at the end.

    When the Kedro context is created it reads ``conf/<env>/gx_suites.yml`` and the run's
    parameters (for ``$PARAMETER`` thresholds such as ``gates.max_accuracy_drop``) and hands them
    to :class:`shrinkflow.validation.SuiteValidator`. When the run ends, failed or not, it renders
    the stored results as HTML in ``data/08_reporting/data_docs``.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        from kedro.config import MissingConfigException

        from shrinkflow import validation

        try:
            suites = context.config_loader["gx_suites"]
        except MissingConfigException:
            suites = {}
        validation.configure(validation.Validation(Path(context.project_path), suites, context.params))

    def _docs(self) -> None:
        from shrinkflow import validation

        if not distributed.is_main():  # under torchrun rank 0 writes the docs
            return
        try:
            validation.active().build_docs()
        except validation.SuiteConfigError:
            pass
        except Exception as exc:  # the docs are for reading; never let them hide the run's own outcome
            log.warning("Data Docs were not built: %s: %s", type(exc).__name__, exc)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._docs()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._docs()
