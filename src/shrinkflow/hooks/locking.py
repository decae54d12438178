"""One ``kedro run`` at a time per project: an OS file lock held while the pipeline runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from shrinkflow.core import distributed


class RunLockHook:
    """One ``kedro run`` at a time per project: two runs writing the same artifacts at once would
    leave a mix of both (a teacher from one, a quantized model from the other).

    The lock is ``data/.run.lock`` (an OS file lock: a killed run releases it with its process).
    A second run fails at once naming the holder; set ``SHRINKFLOW_LOCK_WAIT=<seconds>`` to wait.
    """

    def __init__(self) -> None:
        self._lock: Any = None
        self._project: Path | None = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project = Path(context.project_path)

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self) -> None:
        if not distributed.is_main():  # rank 0 holds the lock for its torchrun group
            return
        from filelock import FileLock, Timeout

        path = (self._project or Path.cwd()) / "data" / ".run.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        info = path.with_suffix(".owner")
        wait = float(os.environ.get("SHRINKFLOW_LOCK_WAIT", "0") or 0)
        self._lock = FileLock(str(path))
        try:
            self._lock.acquire(timeout=wait)
        except Timeout:
            holder = info.read_text().strip() if info.is_file() else "another process"
            self._lock = None
            raise RunLockedError(
                f"another kedro run is writing this project's artifacts ({holder}; lock {path}); "
                "expected one run at a time: wait for it to finish, or set SHRINKFLOW_LOCK_WAIT=<seconds>"
            ) from None
        info.write_text(f"pid {os.getpid()}, started {_now()}\n")

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._release()


class RunLockedError(RuntimeError):
    """Another run holds the project's run lock."""


def _now() -> str:
    import datetime as dt

    return dt.datetime.now().isoformat(timespec="seconds")
