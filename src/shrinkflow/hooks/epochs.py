"""Per-epoch curves as MLflow step metrics, written while a training node runs."""

from __future__ import annotations

import math
from typing import Any

from shrinkflow.stages import MAKER

__all__ = ["CURVES", "EPOCH_FIELDS", "EpochMetrics"]

#: training nodes and the model their per-epoch curves are named after (``pruned.val_accuracy``)
CURVES = {node: model for model, node in MAKER.items()}
#: what an epoch logs
EPOCH_FIELDS = ("loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


class EpochMetrics:
    """Each epoch of a training node as MLflow step metrics, ``<model>.<field>`` at step ``n``, the
    node's ``n``-th epoch (a node that trains several times, e.g. a gradual pruning schedule's
    fine-tunes, continues the count): ``train_loss`` (``loss``: the objective trained, e.g. a
    distillation loss), ``train_accuracy``, ``val_loss`` (cross-entropy) and ``val_accuracy`` on
    the validation split, and ``lr``, the learning rate the epoch started with."""

    def __init__(self, model: str) -> None:
        self.model, self.step = model, 0

    def __call__(self, _label: str, entry: Any) -> None:
        import mlflow

        self.step += 1
        values = {name: getattr(entry, name, None) for name in EPOCH_FIELDS}
        metrics = {
            f"{self.model}.{'train_loss' if k == 'loss' else k}": float(v)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        mlflow.log_metrics(metrics, step=self.step)
