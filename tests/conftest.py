"""Shared test set-up: offline, no telemetry, small real data (scikit-learn's digits)."""

from __future__ import annotations

import os

for _key, _value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    # pytest-xdist runs one worker per core: one torch thread each (and in the `kedro run`
    # subprocesses) avoids oversubscribing the cores, which made small tests 10-30x slower.
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# --- one default `kedro run`, shared by the test files that start from a project after a good run ---

import shutil  # noqa: E402
import sqlite3  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from filelock import FileLock  # noqa: E402


def _shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's temporary root that every pytest-xdist worker sees (its own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def good_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project copy in which the default digits run (FAST_EVAL timing) completed, made once per
    session by whichever worker asks first. Read-only: tests take a copy with ``copy_good_run``.
    (tests/test_kedro_run.py makes its own default run and checks that it gives the same figures.)"""
    from test_kedro_run import project_after_a_good_run

    root = _shared_tmp(tmp_path_factory)
    template, done = root / "good_run_template", root / "good_run_template.done"
    with FileLock(str(root / "good_run_template.lock")):
        if not done.is_file():
            shutil.rmtree(template, ignore_errors=True)  # a worker that failed half-way
            template.mkdir()
            project_after_a_good_run(template)
            done.touch()
    return template


@pytest.fixture(scope="session")
def copy_of_good_run(good_run_template: Path):
    """``copy_of_good_run(dest)``: ``dest`` made a copy of ``good_run_template`` (see ``_copy``)."""
    return lambda dest: _copy(good_run_template, dest)


def _copy(template: Path, dest: Path) -> Path:
    """``template`` copied to ``dest``, its MLflow store moved with it: every absolute path of the
    template in ``mlflow.db`` (artifact locations, tags) and in the logged models' files names
    ``dest``, so runs recorded in the copy stay in the copy."""
    shutil.copytree(template, dest, dirs_exist_ok=True)
    old, new = str(template), str(dest)
    with sqlite3.connect(dest / "mlflow.db") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for _, column, kind, *_ in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                if any(k in (kind or "").upper() for k in ("CHAR", "TEXT", "CLOB")):
                    db.execute(
                        f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) WHERE instr("{column}", ?) > 0',
                        (old, new, old),
                    )
    db.close()
    for path in (dest / "mlartifacts").rglob("*"):
        if path.is_file() and path.suffix in ("", ".yaml", ".yml", ".json", ".txt"):
            try:
                text = path.read_text()
            except UnicodeDecodeError:
                continue
            if old in text:
                path.write_text(text.replace(old, new))
    return dest
