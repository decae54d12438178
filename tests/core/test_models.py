"""The model zoo and ModelSpec: shapes, parameter counts, import-path specs and their errors."""

from __future__ import annotations

import sys
import types
import urllib.error

import pytest
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import (
    MLP,
    LeNet5,
    ModelChoice,
    ModelSpec,
    SeedCNN,
    build_model,
    check_forward,
    lenet_300_100,
)

BUILT_INS = ["lenet5", "lenet_300_100", "mlp", "seed_cnn"]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", BUILT_INS)
@pytest.mark.parametrize(("shape", "classes"), [((1, 8, 8), 10), ((1, 28, 28), 10), ((1, 28, 28), 3)])
def test_every_built_in_model_builds_and_outputs_one_logit_per_class(name, shape, classes):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name), shape, classes).eval()
    with torch.no_grad():
        out = model(torch.rand(5, *shape))
    assert out.shape == (5, classes) and out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("seed_cnn", (1, 28, 28), 206_922),  # the seed article's CNN, with its two pools restored
        ("lenet_300_100", (1, 28, 28), 266_610),  # Deep Compression's MNIST MLP
        ("lenet5", (1, 28, 28), 61_706),  # the classic LeNet-5
        ("lenet5_caffe", (1, 28, 28), 431_080),  # Deep Compression's "LeNet-5": 1,720 KB in fp32
        ("lenet5_caffe", (1, 8, 8), 520 + 25_050 + (50 * 2 * 2) * 500 + 500 + 5_010),
        ("mlp", (1, 8, 8), 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10),
        ("seed_cnn", (1, 8, 8), 160 + 4_640 + (32 * 2 * 2) * 128 + 128 + 1_290),
        ("lenet5", (1, 8, 8), 156 + 2_416 + (16 * 2 * 2) * 120 + 120 + 10_164 + 850),
    ],
)
def test_parameter_counts(name, shape, expected):
    assert _params(build_model(ModelSpec(name), shape, 10)) == expected


def test_registered_names_are_the_classes_of_the_zoo():
    assert set(BUILT_INS) <= set(plugins.available(plugins.MODELS))
    assert isinstance(build_model(ModelSpec("seed_cnn"), (1, 28, 28), 10), SeedCNN)
    assert isinstance(build_model(ModelSpec("lenet5"), (1, 28, 28), 10), LeNet5)
    model = build_model(ModelSpec("lenet_300_100"), (1, 28, 28), 10)
    assert isinstance(model, MLP)
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [300, 100, 10]
    assert _params(lenet_300_100((1, 28, 28), 10)) == 266_610


def test_mlp_kwargs_shape_the_network():
    model = build_model(ModelSpec("mlp", {"hidden": [32, 16], "dropout": 0.2}), (3, 4, 4), 5)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(48, 32), (32, 16), (16, 5)]
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2
    assert not any(isinstance(m, nn.Dropout) for m in build_model(ModelSpec("mlp"), (1, 8, 8), 10))


def test_seed_cnn_width_and_hidden():
    model = build_model(ModelSpec("seed_cnn", {"width": 4, "hidden": 8}), (1, 28, 28), 10)
    assert model.features[0].out_channels == 4 and model.features[3].out_channels == 8
    assert model.classifier[0].in_features == 8 * 7 * 7 and model.classifier[0].out_features == 8


def test_lenet5_keeps_a_feature_map_on_small_inputs():
    assert LeNet5((1, 8, 8), 10).classifier[0].in_features == 16 * 2 * 2
    assert LeNet5((1, 28, 28), 10).classifier[0].in_features == 16 * 5 * 5
    assert LeNet5((3, 32, 32), 10).classifier[0].in_features == 16 * 6 * 6


def test_the_same_seed_builds_the_same_weights():
    torch.manual_seed(3)
    a = build_model(ModelSpec("mlp"), (1, 8, 8), 10).state_dict()
    torch.manual_seed(3)
    b = build_model(ModelSpec("mlp"), (1, 8, 8), 10).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- ModelSpec validation ----------------------------------------------------------------------


def test_unknown_model_name_lists_the_available_ones():
    with pytest.raises(ConfigError) as info:
        ModelSpec("resnet50")
    message = str(info.value)
    assert "unknown model 'resnet50'" in message
    assert f"available models are {plugins.available(plugins.MODELS)}" in message
    assert all(f"'{name}'" in message for name in BUILT_INS)


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"name": ""}, "name"), ({"name": 3}, "name"), ({"kwargs": [1]}, "kwargs")]
)
def test_model_spec_fields_are_checked(kwargs, key):
    with pytest.raises(ConfigError) as info:
        ModelSpec(**kwargs)
    assert info.value.key == key


def test_model_spec_round_trips_and_rejects_unknown_keys():
    spec = ModelSpec("mlp", {"hidden": [8]})
    assert spec.to_dict() == {"name": "mlp", "kwargs": {"hidden": [8]}}
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(
        ConfigError,
        match=r"^model\.hidden=\[8\] is invalid: expected one of the keys \['name', 'kwargs', 'standardize'\]",
    ):
        ModelSpec.from_dict({"name": "mlp", "hidden": [8]}, key="model")


def test_an_import_path_spec_builds_a_torch_class_without_data_arguments():
    spec = ModelSpec("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    model = build_model(spec, (1, 2, 2), 10)  # nn.Linear takes neither input_shape nor num_classes
    assert isinstance(model, nn.Linear) and (model.in_features, model.out_features) == (4, 2)
    assert model(torch.rand(3, 4)).shape == (3, 2)


@pytest.fixture
def zoo(monkeypatch) -> types.ModuleType:
    """A user's model module, importable as ``user_zoo``."""
    module = types.ModuleType("user_zoo")
    module.calls = []

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    def shape_only(input_shape, width=2):
        module.calls.append(("shape_only", input_shape, width))
        return nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width))

    def anything(**kwargs):
        module.calls.append(("anything", kwargs))
        return nn.Identity()

    def not_a_module(input_shape, num_classes):
        return "model"

    def strict(input_shape, num_classes, width=1):
        if width < 1:
            raise ConfigError("width", width, "a positive integer")
        return nn.Identity()

    module.Fixed, module.shape_only, module.anything = Fixed, shape_only, anything
    module.not_a_module, module.strict = not_a_module, strict
    monkeypatch.setitem(sys.modules, "user_zoo", module)
    return module


def test_data_arguments_are_passed_only_where_accepted(zoo):
    assert isinstance(build_model(ModelSpec("user_zoo:Fixed"), (1, 8, 8), 10), zoo.Fixed)
    build_model(ModelSpec("user_zoo:shape_only", {"width": 3}), [1, 8, 8], 10)
    build_model(ModelSpec("user_zoo:anything", {"extra": 1}), (1, 8, 8), 7)
    assert zoo.calls == [
        ("shape_only", (1, 8, 8), 3),
        # never through **kwargs: torchvision's resnet18(**kwargs) hands them to a class without input_shape
        ("anything", {"extra": 1}),
    ]


def test_bad_kwargs_name_the_model(zoo):
    with pytest.raises(ConfigError) as info:
        ModelSpec("mlp", {"widths": [8]})  # checked against the signature when the spec is made
    assert info.value.key == "kwargs" and info.value.value == {"widths": [8]}
    assert (
        "arguments mlp accepts: ['dropout', 'hidden', 'input_shape', 'num_classes'] (not ['widths'])"
        in str(info.value)
    )
    with pytest.raises(ConfigError, match=r"^model torch\.nn:Linear\.kwargs=\{'in_features': 4\} is invalid"):
        build_model(ModelSpec("torch.nn:Linear", {"in_features": 4}), (1, 2, 2), 10)


def test_config_errors_from_a_factory_are_prefixed_with_the_model(zoo):
    with pytest.raises(ConfigError) as info:
        build_model(ModelSpec("mlp", {"hidden": []}), (1, 8, 8), 10)
    assert info.value.key == "model mlp.hidden"
    with pytest.raises(ConfigError, match=r"^model mlp\.dropout=1\.0 is invalid"):
        build_model(ModelSpec("mlp", {"dropout": 1.0}), (1, 8, 8), 10)
    with pytest.raises(
        ConfigError, match=r"^model user_zoo:strict\.width=0 is invalid: expected a positive integer"
    ):
        build_model(ModelSpec("user_zoo:strict", {"width": 0}), (1, 8, 8), 10)


def test_a_factory_must_return_a_module(zoo):
    with pytest.raises(ConfigError, match=r"a factory returning torch.nn.Module, got str"):
        build_model(ModelSpec("user_zoo:not_a_module"), (1, 8, 8), 10)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
        ("torch.nn:NoSuchNet", "has no 'NoSuchNet'"),
    ],
)
def test_a_bad_import_path_fails_when_the_spec_is_made(name, text):
    # resolved when the configuration is read, before any node runs (not lazily, at the teacher node)
    with pytest.raises(ConfigError, match=text) as info:
        ModelSpec(name)
    assert info.value.key == "name" and info.value.value == name


# --- ModelChoice: kwargs per model; the data-shape check --------------------------------------


def test_kwargs_are_kept_per_model_so_switching_names_drops_them():
    choice = ModelChoice.from_dict(
        {"name": "mlp", "kwargs": {"mlp": {"hidden": [8]}, "resnet20": {"width": 4}}}
    )
    assert choice.spec == ModelSpec("mlp", {"hidden": [8]})
    switched = ModelChoice.from_dict({**choice.to_dict(), "name": "resnet20"})
    assert switched.spec == ModelSpec("resnet20", {"width": 4})
    assert ModelChoice.from_dict({**choice.to_dict(), "name": "lenet5"}).spec == ModelSpec("lenet5", {})
    assert ModelChoice.from_dict(choice.to_dict()) == choice


def test_flat_kwargs_are_refused_with_the_per_model_form():
    with pytest.raises(ConfigError) as info:
        ModelChoice.from_dict({"name": "mlp", "kwargs": {"hidden": [8]}}, key="train_teacher.model")
    assert info.value.key == "train_teacher.model.kwargs.hidden"
    assert "e.g. kwargs: {mlp: {hidden: [256, 256]}}" in str(info.value)


def test_kwargs_a_model_does_not_take_fail_naming_its_block():
    with pytest.raises(ConfigError) as info:
        ModelChoice.from_dict({"name": "lenet5", "kwargs": {"lenet5": {"hidden": [8]}}}, key="model")
    assert info.value.key == "model.kwargs.lenet5" and "(not ['hidden'])" in str(info.value)


@pytest.fixture
def hub(monkeypatch) -> types.ModuleType:
    """Factories shaped like torchvision's: keyword-only weights, everything else via **kwargs."""
    module = types.ModuleType("user_hub")

    class Net(nn.Module):
        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            self.fc = nn.Linear(192, num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1))

    def resnet_like(*, weights=None, progress=True, **kwargs):
        if weights is not None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return Net(**kwargs)

    module.resnet_like = resnet_like
    monkeypatch.setitem(sys.modules, "user_hub", module)
    return module


def test_a_torchvision_style_factory_gets_only_its_own_kwargs(hub):
    spec = ModelSpec("user_hub:resnet_like", {"num_classes": 10})
    model = build_model(spec, (3, 8, 8), 10)  # no input_shape passed through **kwargs
    check_forward(model, spec, (3, 8, 8), 10)
    default = ModelSpec("user_hub:resnet_like")
    with pytest.raises(ConfigError, match=r"logits of shape \(N, 10\) .* got \(1000,\) per sample"):
        check_forward(build_model(default, (3, 8, 8), 10), default, (3, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"accepts the data's batches of shape \(N, 1, 8, 8\)"):
        check_forward(model, spec, (1, 8, 8), 10)


def test_weights_that_must_be_downloaded_fail_clearly_offline(hub):
    spec = ModelSpec("user_hub:resnet_like", {"weights": "IMAGENET1K_V1", "num_classes": 10})
    with pytest.raises(ConfigError) as info:
        build_model(spec, (3, 8, 8), 10)
    message = str(info.value)
    assert "pretrained weights could not be fetched: URLError" in message
    assert "give the state-dict file as model.pretrained" in message
