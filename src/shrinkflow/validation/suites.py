"""Great Expectations suites declared in configuration (``conf/<env>/gx_suites.yml``), run on frames.

A suite is ``{frame, on_failure, expectations: [{type, kwargs, meta}]}``: ``type`` and ``kwargs``
are GX 1.x's own (``expect_column_values_to_be_between`` ...), so any GX expectation can be used
without code. A kwarg may be ``{$PARAMETER: dotted.key}``, taken from the Kedro parameters of the
run (``gates.max_accuracy_drop``); a parameter set to ``null`` switches that expectation off.

Results are stored in a GX file context (``data/gx``, generated from the configuration, not kept
in git) and rendered as Data Docs HTML into ``data/08_reporting/data_docs``. GX is imported only
when a suite runs (about 3 s).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock

from shrinkflow.validation.frames import FRAMES

__all__ = ["Failure", "Suite", "SuiteConfigError", "SuiteResult", "SuiteStore", "parse_suites"]

log = logging.getLogger(__name__)

ON_FAILURE = ("fail", "warn")
#: data modalities a suite's ``variants`` may name (see ``frames.data_modality``)
MODALITIES = ("image", "table", "text")
_KEYS = ("frame", "on_failure", "expectations", "row_label", "description", "variants")
PARAMETER = "$PARAMETER"
#: stored validation results kept per suite (older ones are deleted, so Data Docs stay quick to build)
KEEP_RESULTS = 10


class SuiteConfigError(ValueError):
    """A suite in gx_suites.yml is malformed or names an unknown parameter."""


@dataclass(frozen=True)
class Suite:
    name: str
    frame: str
    on_failure: str
    expectations: tuple[dict[str, Any], ...]
    #: column naming each row in messages (``stage``, ``split``), if any
    row_label: str | None = None
    #: {modality: suite}: data of that modality is checked by the named suite instead
    variants: dict[str, str] = field(default_factory=dict)


def parse_suites(config: Mapping[str, Any]) -> dict[str, Suite]:
    """Check the gx_suites configuration; every error names the suite and the key."""
    suites = {}
    for name, block in (config or {}).items():
        if not isinstance(block, Mapping):
            raise SuiteConfigError(
                f"gx_suites.{name}: expected a mapping with frame, on_failure, expectations"
            )
        unknown = set(block) - set(_KEYS)
        if unknown:
            raise SuiteConfigError(
                f"gx_suites.{name}: unknown keys {sorted(unknown)}; expected {', '.join(_KEYS)}"
            )
        frame = block.get("frame", "table")
        if frame not in FRAMES:
            raise SuiteConfigError(f"gx_suites.{name}.frame={frame!r}: expected one of {sorted(FRAMES)}")
        on_failure = block.get("on_failure", "fail")
        if on_failure not in ON_FAILURE:
            raise SuiteConfigError(
                f"gx_suites.{name}.on_failure={on_failure!r}: expected one of {list(ON_FAILURE)}"
            )
        items = block.get("expectations")
        if not isinstance(items, list) or not items:
            raise SuiteConfigError(f"gx_suites.{name}.expectations: expected a non-empty list")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping) or not isinstance(item.get("type"), str):
                raise SuiteConfigError(
                    f"gx_suites.{name}.expectations[{i}]: expected {{type: expect_..., kwargs: {{...}}}}, got {item!r}"
                )
            if set(item) - {"type", "kwargs", "meta", "notes"}:
                raise SuiteConfigError(
                    f"gx_suites.{name}.expectations[{i}]: unknown keys {sorted(set(item) - {'type', 'kwargs', 'meta', 'notes'})}"
                )
        variants = block.get("variants") or {}
        if not isinstance(variants, Mapping) or not set(variants) <= set(MODALITIES):
            raise SuiteConfigError(
                f"gx_suites.{name}.variants={variants!r}: expected a mapping {{modality: suite}} with "
                f"modalities from {list(MODALITIES)}"
            )
        suites[name] = Suite(
            name, frame, on_failure, tuple(dict(i) for i in items), block.get("row_label"), dict(variants)
        )
    for suite in suites.values():
        for kind, other in suite.variants.items():
            if other not in suites or suites[other].variants:
                raise SuiteConfigError(
                    f"gx_suites.{suite.name}.variants.{kind}={other!r}: expected a declared suite without "
                    f"variants of its own; declared: {sorted(suites)}"
                )
    return suites


def _lookup(params: Mapping[str, Any], dotted: str, where: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        # typed parameter blocks arrive as dataclasses, plain ones as dicts
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif dataclasses.is_dataclass(value) and hasattr(value, part):
            value = getattr(value, part)
        else:
            raise SuiteConfigError(
                f"{where}: parameter {dotted!r} is not set; expected a key of the run's parameters"
            )
    return value


def _substitute(value: Any, params: Mapping[str, Any], where: str) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {PARAMETER}:
            return _lookup(params, value[PARAMETER], where)
        return {k: _substitute(v, params, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, params, where) for v in value]
    return value


def _plain(value: Any) -> Any:
    """GX reports numpy scalars (also inside pairs) and sometimes numbers as strings; make
    messages readable."""
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isnan(value):
        return round(value, 6)
    return value


@dataclass
class Failure:
    """One failed expectation: what was expected and what was observed."""

    expectation: str
    column: str | None
    expected: dict[str, Any]
    observed: Any
    count: int
    examples: list[Any]
    rows: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def call(self) -> str:
        """``expect_column_values_to_be_between(max_value=0.01)``: the expectation as configured."""
        expected = ", ".join(f"{k}={v!r}" for k, v in self.expected.items())
        return f"{self.expectation}({expected})"

    def check_text(self) -> str:
        """Expectation, expected values and, unless examples of the failing values say it,
        the observed value: ``expect_column_values_to_be_between(max_value=0.01) at quantized``."""
        shown = self.labels[:5] + (
            ["..."] if len(self.labels) > 5 or self.count > len(self.labels) > 0 else []
        )
        where = f" at {', '.join(shown)}" if self.labels else ""
        observed = "" if self.examples else f": observed {self.observed}"
        return f"{self.call()}{where}{observed}"

    def describe(self) -> str:
        where = f" at {', '.join(self.labels)}" if self.labels else ""
        return f"{self.call()}: observed {self.observed}{where}"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    evaluated: int
    failures: list[Failure]
    skipped: list[str]

    def message(self, subject: str) -> str:
        lines = [f"{subject}: {len(self.failures)} of {self.evaluated} expectations failed"]
        lines += [f"  - {f.column + ': ' if f.column else ''}{f.describe()}" for f in self.failures]
        return "\n".join(lines)


def _condition_text(condition: Any) -> str:
    """``final == True`` for GX's serialized comparison condition; other forms as GX prints them."""
    if isinstance(condition, Mapping):
        if condition.get("type") == "comparison":
            column = condition.get("column", {})
            name = column.get("name") if isinstance(column, Mapping) else column
            return f"{name} {condition.get('operator')} {condition.get('parameter')!r}"
        if condition.get("type") == "pass_through":
            return str(condition.get("pass_through_filter"))
    return str(condition)


def _failure(result: Any, frame: pd.DataFrame, row_label: str | None) -> Failure:
    cfg = result.expectation_config
    kwargs = {k: v for k, v in dict(cfg.kwargs).items() if k not in ("batch_id", "result_format")}
    column = kwargs.pop("column", None)
    condition = kwargs.pop("row_condition", None)
    kwargs.pop("condition_parser", None)
    if condition is not None:
        kwargs["where"] = _condition_text(condition)
    detail = dict(result.result or {})
    exception = (result.exception_info or {}).get("exception_message")
    count = int(detail.get("unexpected_count") or 0)
    examples = [_plain(v) for v in detail.get("partial_unexpected_list") or []][:5]
    rows = [int(i) for i in detail.get("partial_unexpected_index_list") or [] if isinstance(i, int)]
    if "observed_value" in detail and detail["observed_value"] is not None:
        observed: Any = _plain(detail["observed_value"])
    elif examples:
        observed = f"{count} unexpected value{'s' if count != 1 else ''}, e.g. {examples}"
    elif exception:
        observed = f"error: {exception}"
    else:
        observed = detail or "nothing"
    labels = [str(frame.iloc[i][row_label]) for i in rows if row_label and i < len(frame)]
    return Failure(cfg.type, column, kwargs, observed, max(count, 1), examples, rows, labels)


class SuiteStore:
    """Runs suites in a GX file context under ``root`` and builds Data Docs into ``docs_dir``."""

    SITE = "shrinkflow"

    def __init__(self, root: Path, docs_dir: Path) -> None:
        self.root = Path(root)
        self.docs_dir = Path(docs_dir)
        self._thread_lock = threading.Lock()
        self._file_lock = FileLock(str(self.root / ".gx.lock"))
        self._context: Any = None

    def _ctx(self) -> Any:
        if self._context is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig

            self.root.mkdir(parents=True, exist_ok=True)
            ctx = gx.get_context(mode="file", project_root_dir=str(self.root))
            ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            sites = ctx.list_data_docs_sites()
            if "local_site" in sites:
                ctx.delete_data_docs_site("local_site")
            if self.SITE not in sites:
                ctx.add_data_docs_site(
                    self.SITE,
                    {
                        "class_name": "SiteBuilder",
                        "show_how_to_buttons": False,
                        "store_backend": {
                            "class_name": "TupleFilesystemStoreBackend",
                            # relative to <root>/gx, so the generated yml stays valid if the project moves
                            "base_directory": str(Path("..", *self._relative_docs().parts)),
                        },
                        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    },
                )
            self._context = ctx
        return self._context

    def _relative_docs(self) -> Path:
        import os

        return Path(os.path.relpath(self.docs_dir.resolve(), self.root.resolve()))

    def run(self, suite: Suite, frame: pd.DataFrame, params: Mapping[str, Any]) -> SuiteResult:
        """Validate ``frame`` against ``suite``; stores the result for Data Docs."""
        import great_expectations as gx
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        configs, skipped = [], []
        for i, item in enumerate(suite.expectations):
            where = f"gx_suites.{suite.name}.expectations[{i}] ({item['type']})"
            kwargs = _substitute(dict(item.get("kwargs") or {}), params, where)
            bounds = [k for k in ("min_value", "max_value", "value") if k in kwargs]
            if bounds and all(kwargs[k] is None for k in bounds):
                skipped.append(f"{item['type']}({kwargs.get('column', '')}): its bound is not set")
                continue
            try:
                configs.append(
                    ExpectationConfiguration(type=item["type"], kwargs=kwargs, meta=item.get("meta"))
                )
            except Exception as exc:  # GX raises several types for unknown names and bad kwargs
                raise SuiteConfigError(f"{where}: {type(exc).__name__}: {str(exc)[:300]}") from exc
        if not configs:
            return SuiteResult(suite.name, True, 0, [], skipped)
        with self._thread_lock, self._file_lock:
            ctx = self._ctx()  # GX suites need a live context before expectations are added
            gx_suite = gx.ExpectationSuite(name=suite.name)
            for i, config in enumerate(configs):
                try:
                    gx_suite.add_expectation(config.to_domain_obj())
                except Exception as exc:
                    raise SuiteConfigError(
                        f"gx_suites.{suite.name}.expectations[{i}] ({config.type}): {type(exc).__name__}: {str(exc)[:300]}"
                    ) from exc
            source = self._get_or_add(ctx.data_sources, "shrinkflow", "add_pandas", KeyError)
            asset = self._get_or_add(
                source, suite.name, "add_dataframe_asset", LookupError, getter="get_asset"
            )
            try:
                batch = asset.get_batch_definition("all")
            except KeyError:
                batch = asset.add_batch_definition_whole_dataframe("all")
            gx_suite = ctx.suites.add_or_update(gx_suite)
            definition = ctx.validation_definitions.add_or_update(
                gx.ValidationDefinition(name=suite.name, data=batch, suite=gx_suite)
            )
            result = definition.run(batch_parameters={"dataframe": frame}, result_format="COMPLETE")
            self._prune(suite.name)
        failures = [_failure(r, frame, suite.row_label) for r in result.results if not r.success]
        return SuiteResult(suite.name, bool(result.success), len(result.results), failures, skipped)

    @staticmethod
    def _get_or_add(parent: Any, name: str, add: str, missing: type[Exception], getter: str = "get") -> Any:
        # add_or_update_* would rewrite great_expectations.yml and drop the other assets
        try:
            return getattr(parent, getter)(name)
        except missing:
            return getattr(parent, add)(name)

    def _prune(self, suite: str) -> None:
        stored = sorted(
            (self.root / "gx/uncommitted/validations" / suite).rglob("*.json"),
            key=lambda p: p.stat().st_mtime,
        )
        for old in stored[:-KEEP_RESULTS]:
            old.unlink(missing_ok=True)

    def build_docs(self) -> Path:
        """Render every stored result as HTML; returns the index page."""
        with self._thread_lock, self._file_lock:
            self._ctx().build_data_docs(site_names=[self.SITE])
        return self.docs_dir / "index.html"
