"""torchrun: join the process group, let only rank 0 write and record, leave the group at the end."""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

from shrinkflow.core import distributed

log = logging.getLogger(__name__)


class DistributedHook:
    """Under ``torchrun``: join the process group when the context is created, keep every dataset
    the pipeline writes in memory on ranks other than 0 (rank 0 alone saves artifacts, metrics
    and reports, and records the MLflow run), and leave the group when the run ends.
    Each rank runs every node (data splits and evaluation are cheap and deterministic); training
    inside ``fit`` is what the ranks share (see :mod:`shrinkflow.core.distributed`)."""

    @hook_impl(tryfirst=True)
    def after_context_created(self) -> None:
        if distributed.init():
            log.info(
                "torchrun: rank %d of %d (%s)",
                distributed.rank(),
                distributed.world_size(),
                distributed.backend(),
            )

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        if distributed.is_main():
            return
        from kedro.io import MemoryDataset

        written = sorted(pipeline.all_outputs())
        for name in written:
            catalog[name] = MemoryDataset(copy_mode="assign")
        log.info(
            "rank %d keeps its %d outputs in memory; rank 0 saves them", distributed.rank(), len(written)
        )

    @hook_impl
    def after_pipeline_run(self) -> None:
        distributed.shutdown()

    @hook_impl
    def on_pipeline_error(self) -> None:
        distributed.shutdown()
