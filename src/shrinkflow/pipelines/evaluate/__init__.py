"""One evaluate pipeline, reused per stage through namespaces."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
