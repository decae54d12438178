"""Live progress on a terminal: a bar per training epoch, and one over the search's trials.

The bars are drawn by rich (Kedro's own console library) on rich's global console, the one Kedro's
log handler writes to, so log lines printed while a bar is live appear above it instead of
through it. A bar is drawn only where someone watches: when that console is a terminal (or a
notebook) and in the first process of a torchrun group. Piped to a file or in CI, nothing is
drawn and the output is the log lines alone. ``SHRINKFLOW_PROGRESS=0`` turns the bars off,
``=1`` forces them (a terminal rich does not recognise).

The bar of an epoch is transient: when the epoch ends it disappears, and the epoch's log line
(loss, accuracy, validation) is what stays on screen.
"""

from __future__ import annotations

import os
import time
from typing import Any

from shrinkflow.core import distributed

__all__ = ["EpochBar", "TrialBar", "enabled"]


def _console() -> Any:
    from rich import get_console

    return get_console()


def enabled() -> bool:
    """Whether bars are drawn here: ``SHRINKFLOW_PROGRESS`` if set, else on a terminal or in a
    notebook, and only in the main process of a distributed run."""
    if not distributed.is_main():
        return False
    forced = os.environ.get("SHRINKFLOW_PROGRESS", "").strip().lower()
    if forced in {"0", "false", "no", "off"}:
        return False
    if forced in {"1", "true", "yes", "on"}:
        return True
    console = _console()
    return bool(console.is_terminal or console.is_jupyter)


#: the display in use: rich allows one live display at a time, so the bars of a search's trials'
#: epochs are tasks added to the search's display rather than displays of their own
_live: list[Any] = []


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=_console(),
        transient=True,
        refresh_per_second=4,
    )


class _Bar:
    """A task on the live display, started with it when none is live; removed when done."""

    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total = description, total
        self.progress: Any = None

    def __enter__(self) -> _Bar:
        if not enabled():
            return self
        self.own = not _live
        if self.own:
            _live.append(_progress())
            _live[0].start()
        self.progress = _live[0]
        self.task = self.progress.add_task(self.description, total=self.total, info="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is None:
            return
        self.progress.remove_task(self.task)
        if self.own:
            _live.pop().stop()
        self.progress = None

    def show(self, completed: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, info=info)


class EpochBar(_Bar):
    """One epoch's bar: samples done out of ``total``, the running loss and accuracy, samples/s and
    the time left. Costs nothing where :func:`enabled` is false."""

    def __init__(self, label: str, epoch: int, epochs: int, total: int) -> None:
        super().__init__(f"{label} epoch {epoch}/{epochs}", total)
        self.seen, self.loss, self.right = 0, 0.0, 0
        self.start = time.perf_counter()

    def update(self, samples: int, loss: float, right: int) -> None:
        """After a batch of ``samples`` with mean ``loss`` and ``right`` correct predictions."""
        if self.progress is None:
            return
        self.seen += samples
        self.loss += loss * samples
        self.right += right
        rate = self.seen / max(time.perf_counter() - self.start, 1e-9)
        self.show(
            self.seen,
            f"loss {self.loss / self.seen:.4f}  acc {self.right / self.seen:.4f}  {rate:,.0f} samples/s",
        )


class TrialBar(_Bar):
    """The search's bar: trials finished out of the budget (``n_trials``), and the best value so
    far (the number of Pareto-optimal trials when there are several objectives)."""

    def __init__(self, budget: int) -> None:
        super().__init__("search trials", budget)

    def update(self, finished: int, best: str) -> None:
        self.show(finished, best)
