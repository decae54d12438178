"""Load raw data through a data-set plugin, check it, split it."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
