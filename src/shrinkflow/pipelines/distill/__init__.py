"""Distil the teacher into the pruned model or a smaller student."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
