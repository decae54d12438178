"""Progress bars: drawn on a terminal (a real pseudo-terminal here), silent when piped, nested
inside the search's bar, and off on every torchrun rank but the first."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest
from rich.console import Console

from shrinkflow.core import progress
from shrinkflow.core.progress import EpochBar, TrialBar

# trains an MLP on digits for 2 epochs, each slowed to ~1.5 s so that the bar refreshes (4 Hz);
# logs through rich's handler on the global console, as Kedro does
SCRIPT = """
import logging, time
from rich.logging import RichHandler
logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(show_time=False, show_path=False)])
import torch.nn.functional as F
from shrinkflow.core.data import Split
from shrinkflow.core.models import MLP
from shrinkflow.core.training import TrainConfig, fit, seed_everything
from sklearn.datasets import load_digits
import torch
x, y = load_digits(return_X_y=True)
data = Split.of(torch.tensor(x[:480], dtype=torch.float32).view(-1, 1, 8, 8) / 16, torch.tensor(y[:480]), 10)
seed_everything(0)
def slow(logits, _x, y):
    time.sleep(0.05)
    return F.cross_entropy(logits, y)
fit(MLP((1, 8, 8), 10, hidden=(32,)), data, TrainConfig(epochs=2, batch_size=16), val=data, loss_fn=slow, label="teacher")
"""
EPOCH_LINE = re.compile(r"teacher epoch (\d)/2  loss \d\.\d{4}  train_acc \d\.\d{4}  val_acc \d\.\d{4}")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"SHRINKFLOW_PROGRESS", "TERM", "NO_COLOR"}}
    return {**env, "COLUMNS": "160", "OMP_NUM_THREADS": "1", **extra}


def _in_terminal(code: str) -> str:
    """Everything ``code`` writes to a pseudo-terminal (stdout and stderr), as a user sees it."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_env(TERM="xterm-256color"),
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_a_live_bar_with_loss_accuracy_and_rate_then_the_epoch_lines():
    out = _in_terminal(SCRIPT)
    frames = re.findall(
        r"teacher epoch 1/2 .*?(\d+)%.*?loss (\d\.\d{4})\s+acc (\d\.\d{4})\s+([\d,]+) samples/s", out
    )
    assert len(frames) >= 2, out[-2000:]  # redrawn while the epoch runs
    percents = [int(f[0]) for f in frames]
    assert percents == sorted(percents) and percents[-1] > percents[0]
    assert all(int(f[3].replace(",", "")) > 0 for f in frames)
    assert "\x1b[" in out  # cursor control: the bar is redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert [m.group(1) for m in EPOCH_LINE.finditer(plain)] == ["1", "2"]


def test_piped_output_has_no_bar_and_the_same_epoch_lines():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    assert "samples/s" not in out and "\r" not in out and "\x1b[" not in out
    assert [m.group(1) for m in EPOCH_LINE.finditer(out)] == ["1", "2"]
    assert len(out.strip().splitlines()) == 2  # the two epoch lines, nothing else


@pytest.fixture
def terminal(monkeypatch) -> io.StringIO:
    """rich's console replaced by a terminal of 150 columns writing into a string."""
    monkeypatch.delenv("SHRINKFLOW_PROGRESS", raising=False)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    monkeypatch.setattr(progress, "_console", lambda: console)
    return out


def test_the_epoch_bar_shows_running_loss_accuracy_and_samples_per_second(terminal):
    with EpochBar("distill", 2, 5, total=100) as bar:
        bar.update(40, loss=0.5, right=30)
        bar.update(40, loss=0.3, right=34)
        bar.progress.refresh()
        assert bar.progress.tasks[0].completed == 80
    text = terminal.getvalue()
    assert "distill epoch 2/5" in text and "80%" in text
    assert "loss 0.4000  acc 0.8000" in text and "samples/s" in text
    assert not progress._live  # the display is gone with the bar


def test_epoch_bars_inside_the_search_bar_share_its_display(terminal):
    with TrialBar(budget=4) as trials:
        trials.update(1, "best accuracy 0.9")
        for epoch in (1, 2):
            with EpochBar("teacher", epoch, 2, total=10) as bar:
                assert bar.progress is trials.progress  # one live display: rich allows no second
                bar.update(10, loss=0.1, right=9)
        assert len(trials.progress.tasks) == 1  # each epoch's task removed when it ended
        trials.progress.refresh()
    assert "search trials" in terminal.getvalue() and "best accuracy 0.9" in terminal.getvalue()
    assert not progress._live


def test_no_bar_when_not_a_terminal_or_switched_off_or_not_rank_zero(terminal, monkeypatch):
    assert progress.enabled()
    monkeypatch.setenv("SHRINKFLOW_PROGRESS", "0")
    assert not progress.enabled()
    with EpochBar("teacher", 1, 1, total=10) as bar:
        bar.update(10, loss=0.1, right=9)
    assert terminal.getvalue() == ""
    monkeypatch.setenv("SHRINKFLOW_PROGRESS", "1")
    monkeypatch.setattr(progress.distributed, "is_main", lambda: False)  # torchrun rank 1
    assert not progress.enabled()
    monkeypatch.undo()
    monkeypatch.setattr(progress, "_console", lambda: Console(file=io.StringIO()))  # a pipe
    assert not progress.enabled()


def test_the_search_bar_counts_finished_trials_and_shows_the_best_value_so_far(terminal):
    import optuna

    from shrinkflow.search.study import _show_progress

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    shown: list[tuple[float, str]] = []
    with TrialBar(budget=5) as bar:
        _show_progress(bar, ["accuracy"], finished, study)  # before any trial: no best yet
        shown.append((bar.progress.tasks[0].completed, bar.progress.tasks[0].fields["info"]))

        def objective(trial: optuna.Trial) -> float:
            x = trial.suggest_float("x", 0.0, 1.0)
            if trial.number == 1:
                raise optuna.TrialPruned()
            return x

        def after(s: optuna.Study, _t: object) -> None:
            _show_progress(bar, ["accuracy"], finished, s)
            shown.append((bar.progress.tasks[0].completed, bar.progress.tasks[0].fields["info"]))

        study.optimize(objective, n_trials=4, callbacks=[after])
        assert bar.progress.tasks[0].total == 5
    best = [max(t.value for t in study.trials[: i + 1] if t.value is not None) for i in range(4)]
    assert shown == [(0, "")] + [(i + 1, f"best accuracy {b:.4g}") for i, b in enumerate(best)]
    two = optuna.create_study(directions=["maximize", "minimize"])
    two.optimize(lambda t: (t.suggest_float("a", 0, 1), t.suggest_float("b", 0, 1)), n_trials=3)
    with TrialBar(budget=3) as bar:
        _show_progress(bar, ["accuracy", "packed_bytes"], finished, two)
        assert bar.progress.tasks[0].fields["info"] == f"{len(two.best_trials)} on the Pareto front"
