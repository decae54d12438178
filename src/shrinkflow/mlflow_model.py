"""The MLflow ``pyfunc`` flavour of a shrinkflow model artifact.

Logged as an MLflow "model from code": MLflow stores this file and the artifact (``.pt``) and
nothing is pickled; loading rebuilds the model from its spec and recipe with
``torch.load(weights_only=True)``, like every other read of an artifact. ``mlflow.pytorch`` is not
used: its default ``pt2`` format cannot export torch.ao int8 models and its ``pickle`` format
unpickles arbitrary code on load.

    model = mlflow.pyfunc.load_model("runs:/<run_id>/model")
    logits = model.predict(images)        # float32 (N, C, H, W) in [0, 1] -> (N, classes) logits
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
from mlflow.models import set_model


class ShrinkflowModel(mlflow.pyfunc.PythonModel):
    """Logits of a shrinkflow artifact for a batch of images."""

    def load_context(self, context: Any) -> None:
        from shrinkflow.core import artifact

        self._artifact = artifact.load(context.artifacts["artifact"])

    # np.ndarray is a hint MLflow infers no schema from and does not wrap predict for (no hint at
    # all makes it print a coloured warning into every log); the signature is logged explicitly.
    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        import torch

        from shrinkflow.core.training import predict

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        expected = tuple(self._artifact.input_shape)
        if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"input of shape {tuple(x.shape)}: expected (N, {', '.join(map(str, expected))})"
            )
        if x.shape[0] == 0:
            return np.empty((0, self._artifact.num_classes), dtype=np.float32)
        return predict(self._artifact.model, x).numpy()


set_model(ShrinkflowModel())
