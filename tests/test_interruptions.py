"""A run killed with SIGKILL while it saves a model, and two runs at the same time."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

import pytest
from test_kedro_run import FAST_EVAL, kedro, start

from shrinkflow.core import artifact

# a ~20 MB teacher (one hidden layer of 65,536 units), so its save lasts long enough to be caught
BIG_TEACHER = "train_teacher.model.kwargs.mlp.hidden=[65536],train_teacher.train.epochs=1"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_of_good_run) -> Path:
    """A project after a good default run (a copy of the session's, tests/conftest.py)."""
    return copy_of_good_run(tmp_path_factory.mktemp("interrupt"))


def test_sigkill_during_a_model_save_keeps_the_previous_artifact_and_a_rerun_succeeds(project: Path):
    models = project / "data/06_models"
    teacher = models / "teacher.pt"
    for _attempt in range(3):
        before = _sha(teacher)
        run = start(project, "--pipelines", "train_teacher", "--params", BIG_TEACHER)
        caught = None
        while run.poll() is None and caught is None:
            caught = next(iter(models.glob(".teacher.pt.*.tmp")), None)
        if caught is not None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
            break
        log, _ = run.communicate()  # the save finished before we looked: the new model is the one to keep
        assert run.returncode == 0, log[-3000:]
    else:
        pytest.fail("never caught the run inside its model save")
    assert run.returncode == -signal.SIGKILL
    assert _sha(teacher) == before  # the previous artifact, whole
    artifact.load(teacher)  # and it loads
    leftovers = list(models.glob(".teacher.pt.*.tmp"))
    assert (
        leftovers and str(run.pid) in leftovers[0].name
    )  # the killed writer's partial file, under a temporary name

    result = kedro(project, "--pipelines", "train_teacher", "--params", FAST_EVAL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert artifact.load(teacher).model is not None
    assert not list(models.glob(".teacher.pt.*.tmp"))  # the next save removed it


def test_a_second_run_while_one_is_writing_is_refused_naming_it(project: Path):
    first = start(project, "--params", FAST_EVAL)
    owner = project / "data/.run.owner"
    deadline = time.monotonic() + 120
    while first.poll() is None and time.monotonic() < deadline:
        if owner.is_file() and f"pid {first.pid}," in owner.read_text():
            break
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the second could start"
    second = kedro(project, "--params", FAST_EVAL)
    out = " ".join((second.stdout + second.stderr).split())
    assert second.returncode != 0
    assert f"another kedro run is writing this project's artifacts (pid {first.pid}, started" in out
    assert "expected one run at a time" in out
    log, _ = first.communicate(timeout=600)
    assert first.returncode == 0, log[-3000:]
    for name in ("teacher", "pruned", "distilled", "quantized"):
        artifact.load(project / f"data/06_models/{name}.pt")
    # and with the first one done, the next run goes ahead
    third = kedro(project, "--pipelines", "report")
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
