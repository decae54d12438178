"""Search recipes (prune -> distill -> quantize) with an Optuna study; not part of the default run."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
