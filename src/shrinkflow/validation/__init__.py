"""Data and quality gates with Great Expectations, run by Kedro's catalog ``validator:`` entries.

- ``conf/<env>/gx_suites.yml`` declares the suites (expectations, which frame, fail or warn);
- a catalog entry binds a dataset to a suite::

      raw_data:
        type: shrinkflow.io.PluginDataset
        plugin: digits
        validator: {class: shrinkflow.validation.SuiteValidator, on: [load], options: {suite: raw_data}}

- ``ValidationHook`` (settings.py) hands the suites and the run's parameters to the validators
  when the Kedro context is created, and renders the Data Docs when the run ends.

Kedro validators see only the data, not the configuration, hence the small :class:`Validation`
object the hook configures; everything else (suites, thresholds) stays in configuration. A suite
with ``variants: {table: raw_data_table}`` hands data of that modality (table rows rather than
images) to the named suite, so the catalog binds one suite name whatever the data set holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from shrinkflow.validation.frames import FRAMES, data_modality
from shrinkflow.validation.suites import Suite, SuiteConfigError, SuiteResult, SuiteStore, parse_suites

__all__ = [
    "DOCS_DIR",
    "GX_ROOT",
    "GateFailure",
    "SuiteConfigError",
    "SuiteValidator",
    "Validation",
    "active",
    "configure",
]

log = logging.getLogger(__name__)

#: where, under the project, the GX store and the Data Docs HTML live
GX_ROOT = Path("data/gx")
DOCS_DIR = Path("data/08_reporting/data_docs")


class GateFailure(ValueError):
    """A suite set to ``on_failure: fail`` did not pass."""

    def __init__(self, result: SuiteResult, subject: str) -> None:
        self.result = result
        super().__init__(result.message(subject))


class Validation:
    """The suites, the run's parameters and the GX store of one Kedro session."""

    def __init__(self, project_path: Path, suites: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self.project_path = Path(project_path)
        self.suites: dict[str, Suite] = parse_suites(suites)
        self.params = dict(params)
        self.store = SuiteStore(self.project_path / GX_ROOT, self.project_path / DOCS_DIR)
        self.results: list[SuiteResult] = []

    def suite(self, name: str) -> Suite:
        if name not in self.suites:
            raise SuiteConfigError(
                f"suite {name!r} is not declared in gx_suites.yml; declared: {sorted(self.suites)}"
            )
        return self.suites[name]

    def resolve(self, name: str, data: Any) -> Suite:
        """Suite ``name``, or its variant for ``data``'s modality (``variants: {table: ...}``)."""
        suite = self.suite(name)
        kind = data_modality(data)
        return self.suite(suite.variants[kind]) if kind in suite.variants else suite

    def check(self, suite_name: str, data: Any, subject: str) -> tuple[SuiteResult, pd.DataFrame]:
        """Run the suite (or its variant for the data's modality) on ``data``'s frame; raise
        GateFailure if it failed and must stop the run."""
        suite = self.resolve(suite_name, data)
        if suite.name != suite_name:
            subject = f"{subject} ({suite.name}: {data_modality(data)} data)"
        frame = FRAMES[suite.frame](data)
        result = self.store.run(suite, frame, self.params)
        self.results.append(result)
        for note in result.skipped:
            log.info("%s: skipped %s", subject, note)
        if not result.success:
            if suite.on_failure == "fail":
                raise GateFailure(result, subject)
            log.warning("%s (on_failure: warn, the run goes on)", result.message(subject))
        return result, frame

    def build_docs(self) -> Path | None:
        if not self.results:
            return None
        index = self.store.build_docs()
        log.info("Data Docs: %s", index)
        return index


_lock = threading.Lock()
_active: Validation | None = None


def configure(validation: Validation | None) -> None:
    """Make ``validation`` the one the catalog's validators use (the hook calls this)."""
    global _active
    with _lock:
        _active = validation


def active() -> Validation:
    if _active is None:
        raise SuiteConfigError(
            "no validation suites are configured: run through `kedro run` (ValidationHook in "
            "settings.py loads conf/<env>/gx_suites.yml), or call shrinkflow.validation.configure()"
        )
    return _active


def _annotate(frame: pd.DataFrame, result: SuiteResult) -> pd.DataFrame:
    """The frame with a ``failed_checks`` column: which expectations each row failed."""
    notes: dict[int, list[str]] = {}
    for failure in result.failures:
        for row in failure.rows:
            notes.setdefault(row, []).append(
                f"{failure.column + ': ' if failure.column else ''}{failure.call()}"
            )
    out = frame.copy()
    out["failed_checks"] = ["; ".join(notes.get(i, [])) for i in range(len(out))]
    return out


def _kedro_error(exc: GateFailure) -> Exception:
    """Kedro's DataValidationError, one line per failed expectation (Kedro adds the dataset name)."""
    from kedro.validation import CheckFailure, DataValidationError

    failures = [
        CheckFailure(
            message=f.describe(),
            check=f.check_text(),
            column=f.column,
            failure_count=f.count if f.examples else 1,
            failure_examples=list(f.examples),
        )
        for f in exc.result.failures
    ]
    return DataValidationError(str(exc), failures=failures)


class SuiteValidator:
    """A Kedro catalog validator running one suite of ``gx_suites.yml`` on the dataset's data.

    On failure it raises (the load or save does not happen, so a failed gate never overwrites an
    artifact), or, for a suite set to ``on_failure: warn``, logs it. A table frame comes back with
    a ``failed_checks`` column, so the saved table (and the report built from it) marks what failed.
    """

    def __init__(self, suite: str) -> None:
        self.suite = suite

    def validate(self, data: Any) -> Any:
        validation = active()
        subject = f"suite {self.suite!r}"
        try:
            result, frame = validation.check(self.suite, data, subject)
        except GateFailure as exc:
            raise _kedro_error(exc) from exc
        if validation.resolve(self.suite, data).frame == "table":
            return _annotate(frame, result)
        return data  # Kedro passes on what a validator returns
