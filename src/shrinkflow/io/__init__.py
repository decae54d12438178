"""Kedro datasets: model artifacts, ONNX exports, user checkpoints, data-set plugins."""

from shrinkflow.io.datasets import (
    CheckpointDataset,
    ModelArtifactDataset,
    OnnxDataset,
    PluginDataset,
    SplitDataset,
)

__all__ = ["CheckpointDataset", "ModelArtifactDataset", "OnnxDataset", "PluginDataset", "SplitDataset"]
