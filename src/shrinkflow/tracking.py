"""Where MLflow records runs, and how shrinkflow's runs are read back.

The default store is a SQLite file in the project (``mlflow.db``, no server needed); a team exports
``MLFLOW_TRACKING_URI=http://host:port`` to share one ``mlflow server``. ``conf/base/mlflow.yml``
asks :func:`tracking_uri` through a config resolver, so kedro-mlflow, the compare command and the
notebook all agree on the store.

This module may import mlflow; ``core`` and ``methods`` never import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "TrackingAccessError",
    "artifact_location",
    "project_root",
    "server_access",
    "tracking_uri",
]

DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def project_root(start: Path | None = None) -> Path:
    """The Kedro project holding ``start`` (default: the working directory).

    ``dvc exp run --temp`` and queued experiments run in a copy of the repository under
    ``<repo>/.dvc/tmp/exps/``; records written there would vanish with the copy, so the root of the
    repository that owns the copy is returned instead.
    """
    from kedro.utils import find_kedro_project

    here = (start or Path.cwd()).resolve()
    root = find_kedro_project(here) or here
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def tracking_uri(start: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else the project's SQLite store (an absolute URI)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(start) / DB_NAME}"


def artifact_location(start: Path | None = None) -> str | None:
    """Artifact folder for a new experiment: the project's ``mlartifacts/`` with the embedded store;
    ``None`` (the server's own setting) when a tracking server is configured."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (project_root(start) / ARTIFACTS_DIR).as_uri()


class TrackingAccessError(RuntimeError):
    """The tracking server refused this user (HTTP 401 or 403) before a run was opened."""


_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _refusal(uri: str, status: int, experiment: str | None) -> str:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 403:
        where = f"experiment {experiment!r}" if experiment else "this request"
        return (
            f"MLflow tracking server {uri} refused user {user!r} (403 permission denied) on {where}: "
            "ask its owner or an admin for EDIT permission, or log to another experiment "
            "(tracking.experiment.name in conf/<env>/mlflow.yml). No run was created."
        )
    missing = [key for key in _CREDENTIALS if not os.environ.get(key)]
    if missing:
        cause = f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
    else:
        cause = f"it rejected user {user!r}: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return (
        f"MLflow tracking server {uri} requires a login (401 not authenticated): {cause}. Export "
        "both (or name a credentials.yml entry holding them in mlflow.yml's server.credentials) "
        "and run again. Nothing was logged."
    )


@contextlib.contextmanager
def server_access(experiment: str | None = None, *, uri: str | None = None) -> Iterator[None]:
    """Turn a tracking server's 401/403 inside the block into a :class:`TrackingAccessError` naming
    the server (``uri``, default MLflow's current tracking URI), the user and the variables to set.

    kedro-mlflow's set-up reads the experiment (the first request, with the credentials it exported
    from ``credentials.yml`` or the environment) when the Kedro context is created and opens the run
    before the pipeline; wrapped in this, a refused login stops ``kedro run`` before any node runs
    and before any run exists on the server.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        status = err.get_http_status_code()
        if status not in (401, 403):
            raise
        import mlflow

        uri = uri or mlflow.get_tracking_uri()
        raise TrackingAccessError(_refusal(uri, status, experiment)) from err
