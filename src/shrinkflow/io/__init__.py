"""Kedro datasets: model artifacts, user checkpoints, data-set plugins."""

from shrinkflow.io.datasets import CheckpointDataset, ModelArtifactDataset, PluginDataset, SplitDataset

__all__ = ["CheckpointDataset", "ModelArtifactDataset", "PluginDataset", "SplitDataset"]
