"""Prune the teacher (pruner plugins) and fine-tune it."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
