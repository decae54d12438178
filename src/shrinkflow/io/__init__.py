"""Kedro datasets: model artifacts, ONNX exports, the deployed model, user checkpoints, data-set plugins."""

from shrinkflow.io.datasets import (
    CheckpointDataset,
    ModelArtifactDataset,
    OnnxDataset,
    PluginDataset,
    SplitDataset,
)
from shrinkflow.io.deployed import DeployedModelDataset

__all__ = [
    "CheckpointDataset",
    "DeployedModelDataset",
    "ModelArtifactDataset",
    "OnnxDataset",
    "PluginDataset",
    "SplitDataset",
]
