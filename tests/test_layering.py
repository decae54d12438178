"""The compression library stands alone: `core` and `methods` import no pipeline or tracking tool."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "shrinkflow"
FORBIDDEN = ("kedro", "kedro_mlflow", "mlflow", "dvc", "great_expectations", "optuna")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["core", "methods"])
def test_core_and_methods_import_no_pipeline_or_tracking_tool(package: str):
    files = sorted((SRC / package).rglob("*.py"))
    assert len(files) > 5
    offending = {
        str(path.relative_to(SRC)): sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        for path in files
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    import mlflow.pyfunc\n    from kedro.io import AbstractDataset\n")
    assert imported_modules(sample) == {"mlflow.pyfunc", "kedro.io"}
