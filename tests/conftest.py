"""Shared test set-up: offline, no telemetry, small real data (scikit-learn's digits)."""

from __future__ import annotations

import os

for _key, _value in {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    # pytest-xdist runs one worker per core: one torch thread each (and in the `kedro run`
    # subprocesses) avoids oversubscribing the cores, which made small tests 10-30x slower.
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
