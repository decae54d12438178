"""Quality gates through `kedro run`: a failed gate stops the run (nothing of the report is
written) or, set to warn, lets it finish with the failure marked; Data Docs show the results."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from test_kedro_run import kedro


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_of_good_run) -> Path:
    """A project after a good default run (a copy of the session's, tests/conftest.py)."""
    return copy_of_good_run(tmp_path_factory.mktemp("gates"))


def test_the_default_run_passes_every_gate_and_reports_them(project: Path):
    gates = pd.read_csv(project / "data/08_reporting/quality_gates.csv", dtype={"failed_checks": str}).fillna(
        ""
    )
    assert gates["stage"].tolist() == ["teacher", "pruned", "distilled", "quantized"]
    assert gates["failed_checks"].tolist() == ["", "", "", ""]
    assert gates.loc[3, "packed_compression_ratio"] >= 5.0 and gates.loc[3, "sparsity"] >= 0.5
    report = (project / "data/08_reporting/report.md").read_text()
    assert "## Quality gates" in report and "0 of 4 stages failed a gate" in report


def test_a_drop_over_budget_stops_the_run_at_the_gate_and_keeps_the_last_report(project: Path):
    reports = [project / "data/08_reporting" / n for n in ("report.md", "metrics.json", "quality_gates.csv")]
    before = [_hash(p) for p in reports]
    drops = pd.read_csv(project / "data/08_reporting/quality_gates.csv")["accuracy_drop"].tolist()[1:]
    assert min(drops) > 0.0001
    result = kedro(project, "--pipelines", "report", "--params", "gates.max_accuracy_drop=0.0001")
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert "Validation failed for dataset 'quality_gates' on save" in out
    assert (
        "accuracy_drop: expect_column_values_to_be_between(max_value=0.0001) at pruned, distilled, quantized"
        in out
    )
    assert f"(e.g. {', '.join(str(round(float(d), 6)) for d in drops)})" in out  # the observed drops
    assert [_hash(p) for p in reports] == before


def test_set_to_warn_the_run_finishes_and_the_report_marks_the_failed_gate(project: Path):
    (project / "conf/local/gx_suites.yml").write_text("quality_gates:\n  on_failure: warn\n")
    try:
        result = kedro(
            project,
            "--pipelines",
            "report",
            "--params",
            "gates.max_accuracy_drop=0.0001,gates.min_sparsity=0.9",
        )
    finally:
        (project / "conf/local/gx_suites.yml").unlink()
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, out[-3000:]
    assert "on_failure: warn, the run goes on" in out
    gates = pd.read_csv(project / "data/08_reporting/quality_gates.csv", dtype={"failed_checks": str}).fillna(
        ""
    )
    assert gates.loc[0, "failed_checks"] == ""
    assert (
        "sparsity: expect_column_values_to_be_between(min_value=0.9, where=" in gates.loc[3, "failed_checks"]
    )
    report = (project / "data/08_reporting/report.md").read_text()
    assert report.count("**FAILED**") == 3 and "3 of 4 stages failed a gate" in report
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time DESC"]
    )
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["quality_gates"] == "failed: distilled, pruned, quantized"


def test_data_docs_show_the_last_runs_suites(project: Path):
    docs = project / "data/08_reporting/data_docs"
    index = (docs / "index.html").read_text()
    for suite in ("raw_data", "split", "quality_gates"):
        assert suite in index
    pages = sorted((docs / "validations/quality_gates").rglob("*.html"), key=lambda p: p.stat().st_mtime)
    assert pages and "accuracy_drop" in pages[-1].read_text()
