"""Contract over every registered plugin, and the registry's error paths."""

from __future__ import annotations

from functools import partial
from importlib.metadata import EntryPoint

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.data import RawData, Split
from shrinkflow.core.method import Context, Method
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, seed_everything

METHOD_FAMILIES = (plugins.PRUNERS, plugins.QUANTIZERS, plugins.DISTILLERS)


def _data(n: int = 64) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10, 10)


@pytest.mark.parametrize(("family", "name"), [(f, n) for f in METHOD_FAMILIES for n in plugins.available(f)])
def test_every_method_plugin_honours_the_contract(family: str, name: str, tmp_path):
    seed_everything(0)
    data = _data()
    plugin = plugins.load(family, name)
    assert isinstance(plugin, Method)
    cfg = plugin.config({})
    assert type(cfg).from_dict(cfg.to_dict()) == cfg  # config round-trips through a plain dict
    base = ModelArtifact.build(ModelSpec("mlp", {"hidden": [32]}), (1, 8, 8), 10)
    teacher = ModelArtifact.build(ModelSpec("mlp", {"hidden": [48]}), (1, 8, 8), 10)
    ctx = Context(
        data, data, fit=partial(fit, train=data, cfg=TrainConfig(epochs=1), val=data), teacher=teacher.model
    )
    model = plugin.apply(base.model, cfg, ctx).eval()
    with torch.inference_mode():
        out = model(data.x)
    assert out.shape == (len(data), 10) and bool(torch.isfinite(out).all())
    result = base.with_step(model, family, name, cfg.to_dict())
    artifact.save(result, tmp_path / "m.pt")
    reloaded = artifact.load(tmp_path / "m.pt")
    with torch.inference_mode():
        assert torch.equal(reloaded.model(data.x), out)


@pytest.mark.parametrize("name", plugins.available(plugins.MODELS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_model_plugin_builds_and_runs(name: str, shape: tuple[int, int, int]):
    artifact_ = ModelArtifact.build(ModelSpec(name), shape, 7)
    out = artifact_.model.eval()(torch.rand(2, *shape))
    assert out.shape == (2, 7) and bool(torch.isfinite(out).all())


def test_every_dataset_plugin_is_listed_and_digits_loads():
    assert {"digits", "mnist"} <= set(plugins.available(plugins.DATASETS))
    raw = plugins.load(plugins.DATASETS, "digits")()
    assert isinstance(raw, RawData) and raw.data.x.shape == (1797, 1, 8, 8)


def test_unknown_name_lists_available_names():
    with pytest.raises(
        plugins.PluginError, match=r"unknown pruner 'nope': available pruners are \[.*'magnitude'"
    ):
        plugins.info(plugins.PRUNERS, "nope")


def test_a_name_registered_twice_names_both(monkeypatch):
    eps = [
        EntryPoint("magnitude", "shrinkflow.methods.pruning.magnitude:plugin", plugins.PRUNERS),
        EntryPoint("magnitude", "other_pkg.pruning:plugin", plugins.PRUNERS),
    ]
    monkeypatch.setattr(plugins, "entry_points", lambda group: eps)
    plugins.refresh()
    try:
        with pytest.raises(
            plugins.PluginError, match=r"registered twice.*magnitude:plugin.*other_pkg.pruning:plugin"
        ):
            plugins.available(plugins.PRUNERS)
    finally:
        monkeypatch.undo()
        plugins.refresh()


def test_the_installed_example_plugin_records_its_distribution():
    info = plugins.info(plugins.PRUNERS, "example_random")
    assert info.distribution == "shrinkflow-example-plugin" and info.version == "0.1.0"


@pytest.mark.parametrize("path", ["no_colon", "json:nothing_here", "not_a_module_xyz:Thing"])
def test_bad_import_paths_fail_clearly(path: str):
    with pytest.raises(plugins.PluginError, match=path.split(":")[0]):
        plugins.load_object(path)
