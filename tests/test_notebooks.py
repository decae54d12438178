"""The walkthrough notebook runs from top to bottom (in a copy of the project), so it cannot rot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.test_kedro_run import ROOT, make_project


def test_walkthrough_notebook_executes(tmp_path: Path, monkeypatch):
    project = make_project(tmp_path)
    (project / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks/walkthrough.ipynb", project / "notebooks")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    notebook = nbformat.read(project / "notebooks/walkthrough.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    ).execute(env={**os.environ})
    outputs = "\n".join(
        str(out.get("text", "")) + str(out.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "int8 done" in outputs and "fp16 done" in outputs
    assert "agreement with the artifact 1.0000" in outputs
    assert any(
        "image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert (project / "mlflow.db").is_file()
