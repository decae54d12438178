"""Cross-cutting concerns of a run, kept out of the nodes; one module per concern.

- :mod:`.seeding`: every RNG seeded before each node;
- :mod:`.tracking`: MLflow parameters, tags, metrics, the final model, the search's trials;
- :mod:`.validation`: Great Expectations suites for the catalog's validators, and the Data Docs;
- :mod:`.distributed`: torchrun ranks (rank 0 alone writes and records);
- :mod:`.locking`: one ``kedro run`` at a time per project.

``settings.HOOKS`` registers them.
"""

from __future__ import annotations

from shrinkflow.hooks.distributed import DistributedHook
from shrinkflow.hooks.locking import RunLockedError, RunLockHook
from shrinkflow.hooks.seeding import SeedHook
from shrinkflow.hooks.tracking import (
    FAMILY_OF_RECORD,
    FINAL_MODEL,
    GATES,
    TEACHER_RECORD,
    MlflowParamsHook,
    TrackingHook,
)
from shrinkflow.hooks.validation import ValidationHook

__all__ = [
    "FAMILY_OF_RECORD",
    "FINAL_MODEL",
    "GATES",
    "TEACHER_RECORD",
    "DistributedHook",
    "MlflowParamsHook",
    "RunLockHook",
    "RunLockedError",
    "SeedHook",
    "TrackingHook",
    "ValidationHook",
]
