"""Training and evaluation loops over streamed mini-batches, on the configured device and precision;
deterministic on the CPU."""

from __future__ import annotations

import logging
import math
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shrinkflow.core import distributed
from shrinkflow.core.config import Config, check_choice, check_range
from shrinkflow.core.data import Split
from shrinkflow.core.loader import Batches
from shrinkflow.core.progress import EpochBar
from shrinkflow.core.runtime import CPU, Runtime, on_device

__all__ = [
    "EpochLog",
    "LossFn",
    "TrainConfig",
    "evaluate",
    "fit",
    "listen",
    "node_seed",
    "predict",
    "predict_split",
    "reader",
    "seed_everything",
]

log = logging.getLogger(__name__)

#: ``loss_fn(logits, x, y)``; the default is cross-entropy on hard labels.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def node_seed(seed: int, name: str) -> int:
    """The seed of the pipeline node ``name`` in a run seeded with ``seed`` (what the SeedHook uses;
    the recipe search seeds its stages the same way, so a trial reproduces ``kedro run``)."""
    return zlib.crc32(f"{seed}:{name}".encode())


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class TrainConfig(Config):
    """How to train (or fine-tune) a model."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 0, 10_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1_000_000, integer=True)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("optimizer", self.optimizer, ["adam", "adamw", "sgd"])
        check_choice("lr_schedule", self.lr_schedule, ["constant", "cosine"])


@dataclass
class EpochLog:
    """One epoch: mean training loss and accuracy, the validation split's accuracy and loss (when
    there is one), and the learning rate the epoch started with."""

    epoch: int
    loss: float
    train_accuracy: float
    val_accuracy: float | None = None
    val_loss: float | None = None
    lr: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


_listeners: list[Callable[[str, EpochLog], None]] = []


@contextmanager
def listen(callback: Callable[[str, EpochLog], None]) -> Iterator[None]:
    """Call ``callback(label, entry)`` at the end of every epoch any :func:`fit` runs while the
    block is open (``label``: ``teacher``, the method's name...). The run tracker draws per-epoch
    curves from it without the training loop knowing about it."""
    _listeners.append(callback)
    try:
        yield
    finally:
        _listeners.remove(callback)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # decoupled weight decay (transformers)
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def fit(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    *,
    val: Split | None = None,
    loss_fn: LossFn | None = None,
    label: str = "train",
    runtime: Runtime = CPU,
    companions: Sequence[nn.Module | None] = (),
) -> list[EpochLog]:
    """Train ``model`` in place on ``runtime``'s device and precision; it is back on the CPU after.

    ``companions``: modules the loss uses (a teacher, held in eval mode), moved to the device with
    the model for the whole run, not per batch or epoch. Shuffling draws its generator's seed from
    torch's global RNG, so a run seeded with :func:`seed_everything` (the pipeline's hook does it per
    node) sees the same batches. Logs one line per epoch: loss, train and val accuracy.
    """
    loss_fn = loss_fn or (lambda logits, _x, y: F.cross_entropy(logits, y))
    if distributed.world_size() > 1:
        return _fit_distributed(model, train, cfg, val, loss_fn, label, runtime, companions)
    device = runtime.device
    with on_device(model, *companions, device=device):
        opt = _optimizer(model, cfg)
        schedule = _schedule(opt, cfg, steps=cfg.epochs * -(-len(train) // cfg.batch_size))
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        batches = train.batches(cfg.batch_size, shuffle=True, generator=gen, device=device)
        step = _Stepper(model, opt, schedule, loss_fn, label, cfg, runtime)
        val_batches = None if val is None else reader(val)  # one reader: its workers serve every epoch
        history: list[EpochLog] = []
        n = len(train)
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            total_loss, correct = 0.0, 0
            lr = _lr(opt)
            with EpochBar(label, epoch, cfg.epochs, n) as bar:
                for xb, yb in batches:
                    loss, right = step(xb, yb, epoch)
                    total_loss += loss * len(yb)
                    correct += right
                    bar.update(len(yb), loss, right)
            history.append(_epoch_end(model, epoch, total_loss / n, correct / n, val_batches, cfg, label, lr))
    model.eval()
    return history


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def _schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> Any:
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    return None


class _Stepper:
    """One optimizer step on a batch, in the runtime's precision: (its mean loss, its correct
    predictions). fp16 scales the loss (GradScaler); a step whose scaled gradients overflowed is
    skipped by the scaler, as torch.amp intends, and the learning-rate schedule still advances."""

    def __init__(
        self,
        net: nn.Module,
        opt: torch.optim.Optimizer,
        schedule: Any,
        loss_fn: LossFn,
        label: str,
        cfg: TrainConfig,
        runtime: Runtime,
    ) -> None:
        self.net, self.opt, self.schedule, self.loss_fn = net, opt, schedule, loss_fn
        self.label, self.cfg, self.runtime = label, cfg, runtime
        self.scaler = runtime.scaler()

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> tuple[float, int]:
        with self.runtime.autocast():
            logits = self.net(xb)
            loss = self.loss_fn(logits, xb, yb)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{self.label}: loss became {value} at epoch {epoch}; expected a finite loss "
                f"(lower lr={self.cfg.lr}?{' or precision: bf16' if self.runtime.precision == 'fp16' else ''})"
            )
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        if self.schedule is not None:
            self.schedule.step()
        return value, int((logits.argmax(1) == yb).sum())


def _epoch_end(
    model: nn.Module,
    epoch: int,
    loss: float,
    accuracy: float,
    val: Batches | None,
    cfg: TrainConfig,
    label: str,
    lr: float,
) -> EpochLog:
    entry = EpochLog(epoch, loss, accuracy, lr=lr)
    if val is not None:
        entry.val_accuracy, entry.val_loss = evaluate(model, val)
    for callback in list(_listeners):
        callback(label, entry)
    if distributed.is_main():
        val_text = "" if entry.val_accuracy is None else f"  val_acc {entry.val_accuracy:.4f}"
        log.info(
            "%s epoch %d/%d  loss %.4f  train_acc %.4f%s",
            label,
            epoch,
            cfg.epochs,
            entry.loss,
            entry.train_accuracy,
            val_text,
        )
    return entry


def _fit_distributed(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    val: Split | None,
    loss_fn: LossFn,
    label: str,
    runtime: Runtime,
    companions: Sequence[nn.Module | None],
) -> list[EpochLog]:
    """``fit`` across the torchrun process group: DistributedDataParallel averages the gradients
    of each rank's ``batch_size / world`` samples, so every step sees one global batch of
    ``batch_size`` as a single process would; DistributedSampler deals each epoch's shuffled
    indices out to the ranks (padded to equal shares). Loss and accuracy are summed over ranks.
    The model and ``companions`` move to the rank's device once, and back to the CPU at the end."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DistributedSampler

    world, device = distributed.world_size(), distributed.device()
    per_rank = max(1, cfg.batch_size // world)
    with on_device(model, *companions, device=device):
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        opt = _optimizer(net, cfg)
        # the same seed on every rank (the pipeline seeds every process alike): the same shuffles
        seed = int(torch.randint(0, 2**62, (1,)))
        sampler = DistributedSampler(
            range(len(train)), num_replicas=world, rank=distributed.rank(), shuffle=True, seed=seed
        )
        schedule = _schedule(opt, cfg, steps=cfg.epochs * -(-len(sampler) // per_rank))
        step = _Stepper(net, opt, schedule, loss_fn, label, cfg, runtime)
        val_batches = None if val is None else reader(val)
        history: list[EpochLog] = []
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            sampler.set_epoch(epoch)
            mine = train.with_indices(train.indices[torch.tensor(list(sampler))])
            totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, samples
            lr = _lr(opt)
            with EpochBar(label, epoch, cfg.epochs, len(mine)) as bar:  # drawn by rank 0 alone
                for xb, yb in mine.batches(per_rank, device=device):
                    loss, right = step(xb, yb, epoch)
                    totals += torch.tensor([loss * len(yb), right, len(yb)], dtype=torch.float64)
                    bar.update(len(yb), loss, right)
            totals = totals.to(device)
            torch.distributed.all_reduce(totals)
            loss_sum, correct, seen = totals.tolist()
            history.append(
                _epoch_end(model, epoch, loss_sum / seen, correct / seen, val_batches, cfg, label, lr)
            )
    model.eval()
    return history


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for the tensor ``x`` in evaluation mode, on the model's device; returned on the CPU."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, x.shape[0], batch_size)]
    )


def reader(data: Split | Batches, batch_size: int = 1024) -> Batches:
    """``data``'s batches in order without augmentation (a :class:`Batches` is used as it is: one
    reader, whose workers persist, serves several passes)."""
    return data if isinstance(data, Batches) else data.for_eval().batches(batch_size)


@torch.inference_mode()
def predict_split(model: nn.Module, data: Split | Batches, batch_size: int = 1024) -> torch.Tensor:
    """Logits (N, classes) for every sample of ``data``, read batch by batch without augmentation,
    computed where the model is and returned on the CPU."""
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    out = [model(xb.to(device)).float().cpu() for xb, _ in reader(data, batch_size)]
    return torch.cat(out) if out else torch.zeros(0, reader(data).split.num_classes)


def evaluate(model: nn.Module, data: Split | Batches, batch_size: int = 1024) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy loss) on ``data``, where the model is."""
    logits = predict_split(model, data, batch_size)
    labels = reader(data).split.y
    accuracy = int((logits.argmax(1) == labels).sum()) / len(labels)
    return accuracy, float(F.cross_entropy(logits, labels))
