"""The final model as ONNX (int8 QDQ where quantized), checked in ONNX Runtime."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
