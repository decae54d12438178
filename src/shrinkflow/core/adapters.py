"""The one place that turns what a model returns into logits.

Models return a logits tensor (torchvision, timm, the built-ins) or an object or mapping holding
``logits`` (Hugging Face ``ModelOutput``). Training, evaluation and the methods call
:func:`logits_of` instead of branching on the model's kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["logits_of"]


def logits_of(output: Any) -> torch.Tensor:
    """``output`` itself when it is a tensor, else its ``logits`` (attribute or key), else the
    first element of a tuple; anything else raises TypeError naming the type."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None and isinstance(output, (tuple, list)) and output:
        logits = output[0]
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"the model returned {type(output).__name__}; expected a logits tensor or an object with .logits"
        )
    return logits
