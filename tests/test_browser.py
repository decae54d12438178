"""A real browser on the two pages people look at: the Kedro-Viz site of the DAG (`kedro viz build`)
and the MLflow UI of a team's server (`--app-name basic-auth`, as the README sets it up) after a
logged-in `kedro run`; and the server's logins: no credentials, a wrong password, another user.

The browser is headless Chromium from Debian (`apt-get install chromium`; `.ci/run` installs it
when missing). Without it the browser tests are skipped, saying why. Pages load offline: every
host but 127.0.0.1 resolves to nothing, so no fonts or analytics are fetched. The screenshots are
kept outside the working tree, in $TMPDIR/shrinkflow-test-artifacts/ (SHRINKFLOW_TEST_ARTIFACTS moves
them; each test prints the paths it wrote).
"""

from __future__ import annotations

import contextlib
import html.parser
import importlib
import json
import os
import pkgutil
import shutil
import subprocess
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from kedro.pipeline import Pipeline
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client

import shrinkflow.pipelines
from shrinkflow.tracking import TrackingAccessError, server_access
from tests._servers import ADMIN, BIN, logged_in, mlflow_server, static_site
from tests.test_kedro_run import FAST_EVAL, make_project

ANN, BOB = ("ann", "ann-password-1"), ("bob", "bob-password-1")
EPOCHS = 3
#: the teacher alone (data, training, its evaluation): a quick run that logs as a full one does
TINY_RUN = ("--to-nodes", "teacher.evaluate", "--params", f"{FAST_EVAL},train_teacher.train.epochs={EPOCHS}")
#: a per-epoch step metric (hooks/tracking.py logs `<model>.<field>` at step = epoch)
METRIC = "teacher.val_accuracy"
#: every host but the local servers resolves to nothing (offline, no telemetry); mlflow.test is
#: the MLflow server as a team reaches it (on 127.0.0.1 its UI opens an assistant panel on first load)
HOSTS = "MAP mlflow.test 127.0.0.1,MAP * ~NOTFOUND,EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def browser() -> str:
    names = ("chromium", "chromium-browser", "google-chrome")
    found = next(filter(None, map(shutil.which, names)), None)
    if found is None:
        reason = (
            "no headless Chromium: `apt-get install -y chromium` (.ci/run tries it) failed or was not run"
        )
        print(reason)
        pytest.skip(reason)
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        pytest.skip(f"{found} does not start: {err}")
    if version.returncode != 0:
        pytest.skip(f"{found} --version failed: {version.stderr[-500:]}")
    return found


@pytest.fixture(scope="module")
def artifacts() -> Path:
    default = Path(tempfile.gettempdir()) / "shrinkflow-test-artifacts"
    folder = Path(os.environ.get("SHRINKFLOW_TEST_ARTIFACTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def render(browser: str, url: str, png: Path, profile: Path, *, size: str = "1600,1000") -> str:
    """The page's DOM once its scripts ran (virtual time: network loads finish first), and its
    screenshot written to ``png``."""
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--host-resolver-rules={HOSTS}",
        "--virtual-time-budget=20000",
        f"--window-size={size}",
        f"--screenshot={png}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and png.stat().st_size > 10_000, result.stderr[-2000:]
    print(f"screenshot: {png}")
    return result.stdout


class _VizNodes(html.parser.HTMLParser):
    """``(type, name)`` of every node Kedro-Viz drew in its flowchart."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: Counter[tuple[str, str]] = Counter()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "g" and "pipeline-node" in (a.get("class") or "").split() and a.get("data-node-type"):
            self.nodes[(a["data-node-type"] or "", a.get("data-node-fullname") or "")] += 1


def _drawn(dom: str) -> Counter[tuple[str, str]]:
    parser = _VizNodes()
    parser.feed(dom)
    return parser.nodes


def _registered() -> dict[str, object]:
    """Each pipeline folder's pipeline, as `find_pipelines` registers it."""
    return {
        m.name: importlib.import_module(f"shrinkflow.pipelines.{m.name}.pipeline").create_pipeline()
        for m in pkgutil.iter_modules(shrinkflow.pipelines.__path__)
        if m.ispkg
    }


def _expected(pipeline) -> Counter[tuple[str, str]]:
    nodes = Counter(("task", n.name.rsplit(".", 1)[-1]) for n in pipeline.nodes)
    for name in pipeline.datasets():
        nodes[("parameters" if name.startswith("params:") else "data", name)] = 1
    return nodes


def test_the_viz_site_draws_every_node_dataset_and_parameter_of_the_dag(
    browser: str, artifacts: Path, tmp_path: Path
):
    project = make_project(tmp_path / "project")
    env = {**os.environ, "COLUMNS": "200"}
    built = subprocess.run(
        [str(BIN / "kedro"), "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0 and (project / "build/index.html").is_file(), built.stdout[-3000:]
    # a viewer who closed the feature tour; every modular pipeline (the evaluations) expanded and
    # every element type shown, through Kedro-Viz's own URL options
    (project / "build/_open.html").write_text(
        '<script>localStorage.setItem("KedroViz", JSON.stringify({showFeatureHints: false}));'
        'location.replace("./" + location.hash.slice(1));</script>'
    )
    registered = _registered()
    pipelines = {  # as pipeline_registry.py makes them: the default is all but the search
        "__default__": sum((p for n, p in registered.items() if n != "search"), Pipeline([])),
        "search": registered["search"],
    }
    drawn = {}
    with static_site(project / "build", tmp_path / "http.log") as site:
        for name, size in (("__default__", "1920,1400"), ("search", "1600,1000")):
            options = f"?pid={name}&expandAllPipelines=true&types=nodes,datasets,parameters"
            png = artifacts / f"viz_{name}.png"
            drawn[name] = _drawn(
                render(browser, f"{site}_open.html#{options}", png, tmp_path / name, size=size)
            )
    for name, pipeline in pipelines.items():
        assert drawn[name] == _expected(pipeline), name
    stages = {"split_data", "train_teacher", "prune", "distill", "quantize", "export_onnx", "report"}
    assert stages <= {task for kind, task in drawn["__default__"] if kind == "task"}
    assert drawn["__default__"][("task", "evaluate")] == 4  # teacher, pruned, distilled, quantized
    assert ("task", "search") in drawn["search"]


@contextlib.contextmanager
def _as(user: tuple[str, str] | None) -> Iterator[None]:
    """MLflow's client (and `kedro run` started inside) logging in as ``user``."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {k: os.environ.pop(k, None) for k in keys}
    if user is not None:
        os.environ.update(dict(zip(keys, user, strict=True)))
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The basic-auth server with ann and bob, whom the admin created (default permission READ)."""
    with mlflow_server(tmp_path_factory.mktemp("team-server"), basic_auth=True) as uri:
        with _as(ADMIN):
            users = get_app_client("basic-auth", tracking_uri=uri)
            for name, password in (ANN, BOB):
                users.create_user(name, password)
        yield uri


def _kedro_run(project: Path, uri: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "COLUMNS": "400"}
    return subprocess.run(
        [str(BIN / "kedro"), "run", *TINY_RUN],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _everything(uri: str) -> tuple[set[str], set[str]]:
    """Every experiment's name and every run's id on the server, as the admin sees them."""
    with _as(ADMIN):
        client = mlflow.MlflowClient(uri)
        experiments = client.search_experiments()
        runs = client.search_runs([e.experiment_id for e in experiments])
        return {e.name for e in experiments}, {r.info.run_id for r in runs}


def test_a_run_without_credentials_is_refused_naming_the_server_before_anything_is_logged(
    team: str, tmp_path: Path
):
    before = _everything(team)
    project = make_project(tmp_path / "project")
    with _as(None):
        result = _kedro_run(project, team)
    assert result.returncode != 0
    out = " ".join((result.stdout + result.stderr).split())
    assert (
        f"TrackingAccessError: MLflow tracking server {team} requires a login (401 not authenticated): "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are not set." in out
    ), out[-3000:]
    assert _everything(team) == before  # no experiment, no run
    assert not [p for p in (project / "data").rglob("*") if p.is_file()]  # no node ran


def test_a_wrong_password_is_refused_naming_the_user(team: str):
    with (
        _as((ANN[0], "not-her-password")),
        pytest.raises(TrackingAccessError) as refused,
        server_access(uri=team),
    ):
        mlflow.MlflowClient(team).search_experiments()
    assert f"MLflow tracking server {team} requires a login" in str(refused.value)
    assert "it rejected user 'ann': check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in str(
        refused.value
    )


@pytest.fixture(scope="module")
def anns_run(team: str, tmp_path_factory: pytest.TempPathFactory):
    project = make_project(tmp_path_factory.mktemp("anns-project"))
    with _as(ANN):
        result = _kedro_run(project, team)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        client = mlflow.MlflowClient(team)
        experiment = client.get_experiment_by_name("shrinkflow")
        (run,) = client.search_runs([experiment.experiment_id])
    return project, run


def test_a_logged_in_run_logs_its_parameters_metrics_and_model(team: str, anns_run):
    project, run = anns_run
    local = json.loads((project / "data/07_model_output/teacher_metrics.json").read_text())
    assert run.info.status == "FINISHED"
    for key in ("accuracy", "packed_bytes", "params_total"):
        assert run.data.metrics[f"teacher.{key}"] == pytest.approx(local[key]), key
    assert run.data.params["train_teacher.train.epochs"] == str(EPOCHS)
    assert run.data.tags["model"] == "mlp" and run.data.tags["dataset"] == "digits"


def test_another_user_reads_but_cannot_edit_anns_experiment(team: str, anns_run):
    _, run = anns_run
    before = _everything(team)
    with _as(BOB):
        client = mlflow.MlflowClient(team)
        experiment = client.get_experiment(run.info.experiment_id)  # READ, the default permission
        assert experiment.name == "shrinkflow"
        with pytest.raises(MlflowException) as denied:
            client.set_experiment_tag(experiment.experiment_id, "owner", "bob")
        assert denied.value.get_http_status_code() == 403
        refused = r"refused user 'bob' \(403 permission denied\) on experiment 'shrinkflow'"
        with pytest.raises(TrackingAccessError, match=refused), server_access(experiment.name, uri=team):
            client.create_run(experiment.experiment_id)
        with pytest.raises(MlflowException) as denied:
            client.log_metric(run.info.run_id, "teacher.accuracy", 0.0)
        assert denied.value.get_http_status_code() == 403
    assert _everything(team) == before
    with _as(ANN):  # the owner may
        mlflow.MlflowClient(team).set_experiment_tag(experiment.experiment_id, "owner", "ann")


def html_text(dom: str) -> str:
    """The visible text of a DOM dump (styles and scripts left out)."""

    class _Text(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self._skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self._skip += tag in ("style", "script")

        def handle_endtag(self, tag: str) -> None:
            self._skip -= tag in ("style", "script")

        def handle_data(self, data: str) -> None:
            if not self._skip:
                self.parts.append(data)

    parser = _Text()
    parser.feed(dom)
    return " ".join(parser.parts)


def _js(number: float) -> str:
    """A number as JavaScript prints it (shortest round-trip digits, no ``.0``)."""
    return str(int(number)) if float(number).is_integer() else repr(float(number))


def _metric_page(run, key: str) -> str:
    """MLflow's metric-history page of one run (the route its own "Plot chart" link builds)."""
    q = urllib.parse.quote
    return (
        f"#/metric?runs={json.dumps([run.info.run_id])}&metric={q(json.dumps(key))}"
        f"&experiments={json.dumps([run.info.experiment_id])}&plot_metric_keys={q(json.dumps([key]))}"
        "&plot_layout={}&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=false"
        "&deselected_curves=[]&last_linear_y_axis_range=[]"
    ).replace(" ", "")


def test_the_mlflow_ui_shows_the_runs_metric_per_step(
    browser: str, artifacts: Path, team: str, anns_run, tmp_path: Path
):
    _, run = anns_run
    with _as(ANN):
        points = mlflow.MlflowClient(team).get_metric_history(run.info.run_id, METRIC)
    history = sorted(points, key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    last, low = history[-1], min(m.value for m in history)
    with logged_in(team, ANN) as proxy:
        page = proxy.replace("127.0.0.1", "mlflow.test") + "/" + _metric_page(run, METRIC)
        dom = render(browser, page, artifacts / "mlflow_metric.png", tmp_path / "profile")
    text = " ".join(html_text(dom).split())
    assert "Error while loading" not in text and "Can't load" not in text, text[:2000]
    # the table under the chart: the last epoch's value, then the lowest one's
    assert f"{METRIC} {_js(last.value)} (step={last.step}) {_js(low)} (step=" in text, text
    assert run.info.run_name in text and "X-axis: Step" in text  # the legend; a line over the epochs
