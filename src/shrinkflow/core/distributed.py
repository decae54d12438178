"""Data-parallel training when launched by ``torchrun``; a no-op otherwise.

``torchrun --nproc_per_node=N`` starts N processes with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and a rendezvous address in their environment. :func:`init` joins them into one process group
(gloo on CPU, nccl when CUDA is available); :func:`shrinkflow.core.training.fit` then wraps the
model in ``DistributedDataParallel`` and gives each rank its share of every epoch through
``DistributedSampler``, with the per-rank batch ``batch_size / N`` so the global batch, learning
rate and schedule are those of one process. Everything else (seeding, evaluation, saving) runs
the same on every rank; only rank 0 writes, which the Kedro hooks arrange.

No launcher or scheduler of our own: torchrun (``torch.distributed.run``) starts, watches and
restarts the processes.
"""

from __future__ import annotations

import datetime as dt
import os

import torch
import torch.distributed as dist

__all__ = ["backend", "device", "init", "is_main", "launched", "rank", "shutdown", "world_size"]


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def rank() -> int:
    return (
        dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))
    )


def world_size() -> int:
    """Processes in the group (1 when not launched by torchrun or not yet initialized)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, or a single process: the one that saves artifacts and records runs."""
    return rank() == 0


def backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def device() -> torch.device:
    """This rank's device: its GPU under nccl, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init(timeout_s: float = 600.0) -> bool:
    """Join the torchrun process group once; True when this process is part of one."""
    if not launched():
        return False
    if not dist.is_initialized():
        chosen = backend()
        if chosen == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(chosen, timeout=dt.timedelta(seconds=timeout_s))
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
