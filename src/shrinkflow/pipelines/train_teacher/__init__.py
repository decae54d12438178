"""Train the reference model, or load the user's checkpoint."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
