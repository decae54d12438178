"""Quantize the distilled model (quantizer plugins)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
