"""Configured models are checked against the data's shape before any node (preflight.py), here on
torchvision and timm factories as users bring them."""

from __future__ import annotations

import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node

from shrinkflow.core.config import ConfigError
from shrinkflow.core.datasets import digits
from shrinkflow.core.models import ModelChoice, ModelSpec, build_model, check_forward
from shrinkflow.preflight import PreflightError, PreflightHook, data_shape
from shrinkflow.stages import DataStage, TeacherStage

TORCHVISION = {
    "name": "torchvision.models:resnet18",
    "kwargs": {"torchvision.models:resnet18": {"num_classes": 10}},
}


def _pipeline(*names: str) -> Pipeline:
    return Pipeline([node(lambda: 0, None, f"out_{name}", name=name) for name in names])


def _hook(teacher: dict, channels: int | None) -> PreflightHook:
    hook = PreflightHook()
    hook._params = {"data": DataStage(channels=channels), "train_teacher": TeacherStage(model=teacher)}
    return hook


def test_data_shape_applies_data_channels_to_the_raw_data():
    catalog = DataCatalog({"raw_data": MemoryDataset(digits())})
    params = {"data": DataStage(channels=3)}
    assert data_shape({"split_data", "train_teacher"}, catalog, params) == ((3, 8, 8), 10)
    assert data_shape({"split_data"}, catalog, {"data": DataStage()}) == ((1, 8, 8), 10)
    assert data_shape({"split_data"}, DataCatalog({}), params) is None  # the data node reports it


def test_torchvision_resnet18_takes_grayscale_digits_through_data_channels():
    catalog = DataCatalog({"raw_data": MemoryDataset(digits())})
    _hook(TORCHVISION, channels=3).before_pipeline_run(_pipeline("split_data", "train_teacher"), catalog)
    with pytest.raises(PreflightError) as info:
        _hook(TORCHVISION, channels=None).before_pipeline_run(
            _pipeline("split_data", "train_teacher"), catalog
        )
    message = str(info.value)
    assert message.startswith("train_teacher.model: model torchvision.models:resnet18")
    assert "accepts the data's batches of shape (N, 1, 8, 8)" in message


def test_a_factory_left_at_its_default_class_count_is_refused():
    catalog = DataCatalog({"raw_data": MemoryDataset(digits())})
    default = {"name": "torchvision.models:resnet18"}
    with pytest.raises(PreflightError, match=r"logits of shape \(N, 10\) .* got \(1000,\) per sample"):
        _hook(default, channels=3).before_pipeline_run(_pipeline("split_data", "train_teacher"), catalog)


def test_no_check_when_no_node_builds_a_model():
    catalog = DataCatalog({})  # would fail to give a shape; not even asked
    _hook({"name": "torchvision.models:resnet18"}, None).before_pipeline_run(_pipeline("evaluate"), catalog)


def test_timm_create_model_with_plain_data_kwargs():
    spec = ModelChoice.from_dict(
        {
            "name": "timm:create_model",
            "kwargs": {"timm:create_model": {"model_name": "resnet18", "num_classes": 10, "in_chans": 1}},
        }
    ).spec
    model = build_model(spec, (1, 8, 8), 10)
    check_forward(model, spec, (1, 8, 8), 10)
    assert model.eval()(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_torchvision_rejects_a_class_count_against_its_weights():
    with pytest.raises(ValueError, match="num_classes"):
        build_model(
            ModelSpec("torchvision.models:resnet18", {"weights": "IMAGENET1K_V1", "num_classes": 10}),
            (3, 8, 8),
            10,
        )


def test_unknown_torchvision_kwarg_fails_when_building():
    with pytest.raises(ConfigError, match=r"arguments its constructor accepts"):
        build_model(ModelSpec("torchvision.models:resnet18", {"widht": 3}), (3, 8, 8), 10)


def test_a_transformer_method_on_an_image_model_fails_before_any_node_trains():
    from shrinkflow.stages import DistillStage, PruneStage

    catalog = DataCatalog({"raw_data": MemoryDataset(digits())})
    hook = _hook({"name": "mlp"}, channels=None)
    hook._params["prune"] = PruneStage(method="heads")
    with pytest.raises(PreflightError, match=r"^prune.method=heads on train_teacher.model: .*use channel"):
        hook.before_pipeline_run(_pipeline("split_data", "train_teacher", "prune"), catalog)
    hook._params["prune"] = PruneStage(method="magnitude")
    hook._params["distill"] = DistillStage(method="hidden_kd", student="pruned")
    with pytest.raises(
        PreflightError, match=r"^distill.method=hidden_kd on train_teacher.model: .*feature_kd"
    ):
        hook.before_pipeline_run(_pipeline("split_data", "train_teacher", "prune", "distill"), catalog)
