"""Where runs are recorded: the project's SQLite file, or $MLFLOW_TRACKING_URI."""

from __future__ import annotations

from pathlib import Path

import pytest

from shrinkflow.tracking import artifact_location, project_root, tracking_uri


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[tool.kedro]\npackage_name = "shrinkflow"\n')
    (tmp_path / "conf").mkdir()
    return tmp_path


def test_default_is_the_projects_sqlite_file_from_any_subfolder(project: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sub = project / "data" / "06_models"
    sub.mkdir(parents=True)
    assert tracking_uri(sub) == f"sqlite:///{project.resolve()}/mlflow.db"
    assert artifact_location(sub) == (project.resolve() / "mlartifacts").as_uri()


def test_the_environment_variable_wins_and_leaves_artifacts_to_the_server(project: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(project) == "http://127.0.0.1:5999"
    assert artifact_location(project) is None


def test_a_dvc_temporary_workspace_records_into_the_repository_that_owns_it(project: Path, monkeypatch):
    # `dvc exp run --temp` and queued experiments run in <repo>/.dvc/tmp/exps/<name>/, deleted after.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (copy / "pyproject.toml").write_text('[tool.kedro]\npackage_name = "shrinkflow"\n')
    assert project_root(copy) == project.resolve()
    assert tracking_uri(copy) == f"sqlite:///{project.resolve()}/mlflow.db"
