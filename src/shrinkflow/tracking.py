"""Where MLflow records runs, and how shrinkflow's runs are read back.

The default store is a SQLite file in the project (``mlflow.db``, no server needed); a team exports
``MLFLOW_TRACKING_URI=http://host:port`` to share one ``mlflow server``. ``conf/base/mlflow.yml``
asks :func:`tracking_uri` through a config resolver, so kedro-mlflow, the compare command and the
notebook all agree on the store.

This module may import mlflow; ``core`` and ``methods`` never import it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["artifact_location", "project_root", "tracking_uri"]

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
