"""The plugin registry: a contract every registered plugin honours, and the registry's error paths."""

from __future__ import annotations

import dataclasses
import os.path
from collections.abc import Iterator
from functools import partial
from importlib.metadata import EntryPoint

import pytest
import torch

import shrinkflow
from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import Config, ConfigError
from shrinkflow.core.data import RawData, Split, check_source
from shrinkflow.core.method import Context, Method
from shrinkflow.core.models import ModelSpec, build_model
from shrinkflow.core.training import TrainConfig, fit, seed_everything

METHOD_FAMILIES = (plugins.PRUNERS, plugins.QUANTIZERS, plugins.DISTILLERS)
METHODS = [(family, name) for family in METHOD_FAMILIES for name in plugins.available(family)]


@pytest.fixture
def registry(monkeypatch) -> Iterator[pytest.MonkeyPatch]:
    """Patch ``plugins.entry_points`` freely; the real registry is back (and re-read) afterwards."""
    plugins.refresh()
    yield monkeypatch
    monkeypatch.undo()
    plugins.refresh()


def _digits_like(n: int = 60, seed: int = 0) -> Split:
    """Digit-shaped (1, 8, 8) images in [0, 1] whose class is readable from the image."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
    x[torch.arange(n), 0, y // 8 + 3, y % 8] = 1.0  # one bright pixel per class
    return Split.of(x, y, 10)


def _tokens_like(n: int = 60, seed: int = 0) -> Split:
    """Token-id rows of 12 ([CLS], words, padding) whose class is the word at position 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    x = torch.randint(20, 40, (n, 12), generator=g)
    x[:, 0], x[:, 1], x[::3, 8:] = 2, 10 + y, 0
    return Split.of(x, y, 10)


def _contract_setting(plugin: Method, cfg: Config) -> tuple[ModelArtifact, ModelArtifact, Split, Split]:
    """(model, teacher, train, val): MLPs on digit-like images, or, for a method whose check
    refuses them (transformer-only methods), small transformer encoders on token ids."""
    base = ModelArtifact.build(ModelSpec("mlp", {"hidden": [32]}), (1, 8, 8), 10)
    try:
        if plugin.check is not None:
            plugin.check(base.model, cfg, (1, 8, 8))
        teacher = ModelArtifact.build(ModelSpec("mlp", {"hidden": [48]}), (1, 8, 8), 10)
        return base, teacher, _digits_like(60, seed=0), _digits_like(20, seed=1)
    except ConfigError:
        encoder = {"vocab_size": 40, "heads": 4, "ffn": 32, "layers": 2}
        base = ModelArtifact.build(ModelSpec("transformer_encoder", {**encoder, "d_model": 16}), (12,), 10)
        teacher = ModelArtifact.build(ModelSpec("transformer_encoder", {**encoder, "d_model": 24}), (12,), 10)
        return base, teacher, _tokens_like(60, seed=0), _tokens_like(20, seed=1)


# --- method plugins -----------------------------------------------------------------------------


def test_the_built_in_methods_are_registered():
    assert {("shrinkflow.pruners", "magnitude"), ("shrinkflow.quantizers", "dynamic_int8")} <= set(METHODS)
    assert ("shrinkflow.distillers", "soft_kd") in METHODS


@pytest.mark.parametrize(("family", "name"), METHODS, ids=[f"{f.rsplit('.', 1)[1]}-{n}" for f, n in METHODS])
def test_every_method_plugin_honours_the_contract(family, name, tmp_path):
    seed_everything(0)
    plugin = plugins.load(family, name)
    assert isinstance(plugin, Method) and issubclass(plugin.config_cls, Config)
    assert dataclasses.is_dataclass(plugin.config_cls)
    assert isinstance(plugin.summary, str) and plugin.summary

    cfg = plugin.config({})  # every option has a default
    assert plugin.config(None) == cfg
    assert type(cfg).from_dict(cfg.to_dict()) == cfg  # round-trips through a plain dict
    with pytest.raises(ConfigError, match=rf"^{name}\.no_such_option=1 is invalid: expected one of the keys"):
        plugin.config({"no_such_option": 1}, key=name)

    base, teacher, train, val = _contract_setting(plugin, cfg)
    fit(teacher.model, train, TrainConfig(epochs=2, lr=1e-2))
    ctx = Context(
        train,
        val,
        fit=partial(fit, train=train, cfg=TrainConfig(epochs=1), val=val),
        teacher=teacher.model.eval(),
    )
    model = plugin.apply(base.model, cfg, ctx).eval()
    with torch.inference_mode():
        out = model(val.x)
    assert out.shape == (len(val), 10) and out.dtype == torch.float32
    assert not bool(torch.isnan(out).any()) and bool(torch.isfinite(out).all())
    assert model(val.x[:1]).shape == (1, 10)  # batch of one still works

    structure = plugin.structure(model) if plugin.structure is not None else None
    result = base.with_step(model, family, name, cfg.to_dict(), structure)
    artifact.save(result, tmp_path / "m.pt")
    reloaded = artifact.load(tmp_path / "m.pt")
    step = {"family": family, "method": name, "config": cfg.to_dict()}
    assert reloaded.recipe == [step if structure is None else {**step, "structure": structure}]
    with torch.inference_mode():
        assert torch.equal(reloaded.model(val.x), out)


# --- model and data-set plugins ------------------------------------------------------------------


#: text classifiers (token ids in) and the kwargs they need: the tokenizer's vocabulary
TEXT_MODELS = {
    "transformer_encoder": {"vocab_size": 100},
    "huggingface": {
        "architecture": "BertForSequenceClassification",
        "config": {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
    },
}


@pytest.mark.parametrize("name", sorted(set(plugins.available(plugins.MODELS)) - set(TEXT_MODELS)))
@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)], ids=["mnist", "digits", "rgb32"])
def test_every_model_plugin_builds_and_runs(name, shape):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name), shape, 10).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and not bool(torch.isnan(out).any())


@pytest.mark.parametrize("name", sorted(TEXT_MODELS))
def test_every_text_model_plugin_builds_and_runs_on_token_ids(name):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, TEXT_MODELS[name]), (32,), 3).eval()
    ids = torch.randint(4, 100, (2, 20))
    ids[:, 0], ids[1, 12:] = 2, 0  # [CLS] first; the second sequence padded
    with torch.inference_mode():
        out = model(ids)
    assert out.shape == (2, 3) and not bool(torch.isnan(out).any())


def test_the_dataset_plugins_are_listed_and_digits_loads():
    assert {"digits", "mnist"} <= set(plugins.available(plugins.DATASETS))
    raw = plugins.load(plugins.DATASETS, "digits")()
    assert isinstance(raw, RawData) and raw.name == "digits" and raw.test is None
    assert raw.data.x.shape == (1797, 1, 8, 8) and raw.data.num_classes == 10
    check_source(raw.data, "digits")


# --- lookup -------------------------------------------------------------------------------------


def test_info_records_where_a_plugin_comes_from():
    info = plugins.info(plugins.PRUNERS, "magnitude")
    assert info.to_dict() == {
        "group": "shrinkflow.pruners",
        "name": "magnitude",
        "value": "shrinkflow.methods.pruning.magnitude:plugin",
        "distribution": "shrinkflow",
        "version": shrinkflow.__version__,
    }


def test_load_imports_the_object_once():
    from shrinkflow.methods.pruning import magnitude

    assert plugins.load(plugins.PRUNERS, "magnitude") is magnitude.plugin
    assert plugins.load(plugins.PRUNERS, "magnitude") is plugins.load(plugins.PRUNERS, "magnitude")


@pytest.mark.parametrize(
    ("group", "word"),
    [
        (plugins.PRUNERS, "pruner"),
        (plugins.QUANTIZERS, "quantizer"),
        (plugins.DISTILLERS, "distiller"),
        (plugins.MODELS, "model"),
        (plugins.DATASETS, "dataset"),
    ],
)
def test_unknown_name_lists_the_available_names(group, word):
    with pytest.raises(plugins.PluginError) as info:
        plugins.load(group, "nope")
    assert str(info.value) == (
        f"unknown {word} 'nope': available {word}s are {plugins.available(group)} (entry-point group '{group}')"
    )
    assert isinstance(info.value, LookupError)


def test_unknown_family_is_refused():
    with pytest.raises(
        plugins.PluginError, match=r"unknown plugin family 'shrinkflow.losses': expected one of \["
    ):
        plugins.available("shrinkflow.losses")


def test_available_is_sorted():
    for group in plugins.FAMILIES:
        assert plugins.available(group) == sorted(plugins.available(group))


# --- discovery, conflicts, refresh ---------------------------------------------------------------


def test_a_name_registered_twice_names_both_targets(registry):
    eps = [
        EntryPoint("magnitude", "shrinkflow.methods.pruning.magnitude:plugin", plugins.PRUNERS),
        EntryPoint("magnitude", "other_pkg.pruning:plugin", plugins.PRUNERS),
    ]
    registry.setattr(plugins, "entry_points", lambda group: eps if group == plugins.PRUNERS else [])
    with pytest.raises(plugins.PluginError) as info:
        plugins.available(plugins.PRUNERS)
    message = str(info.value)
    assert "shrinkflow.pruners plugin 'magnitude' is registered twice" in message
    assert (
        "(shrinkflow.methods.pruning.magnitude:plugin)" in message and "(other_pkg.pruning:plugin)" in message
    )
    assert "uninstall one of them or rename its entry point" in message
    with pytest.raises(plugins.PluginError, match="registered twice"):
        plugins.info(plugins.PRUNERS, "magnitude")


def test_the_same_target_seen_twice_is_not_a_conflict(registry):
    ep = EntryPoint("magnitude", "shrinkflow.methods.pruning.magnitude:plugin", plugins.PRUNERS)
    registry.setattr(plugins, "entry_points", lambda group: [ep, ep])  # editable install + stale egg-info
    assert plugins.available(plugins.PRUNERS) == ["magnitude"]
    assert plugins.info(plugins.PRUNERS, "magnitude").distribution == "unknown"  # no distribution attached


def test_discoveries_are_cached_until_refresh(registry):
    real = plugins.available(plugins.PRUNERS)
    extra = EntryPoint("late", "shrinkflow.methods.pruning.magnitude:plugin", plugins.PRUNERS)
    registry.setattr(plugins, "entry_points", lambda group: [extra])
    assert plugins.available(plugins.PRUNERS) == real  # cached: the new entry point is not seen yet
    plugins.refresh()
    assert plugins.available(plugins.PRUNERS) == ["late"]
    assert plugins.load(plugins.PRUNERS, "late") is plugins.load_object(extra.value)


def test_refresh_forgets_loaded_objects(registry):
    registry.setattr(plugins, "entry_points", lambda group: [EntryPoint("x", "os.path:join", group)])
    plugins.refresh()
    assert plugins.load(plugins.PRUNERS, "x") is os.path.join
    registry.setattr(plugins, "entry_points", lambda group: [EntryPoint("x", "os.path:split", group)])
    assert plugins.load(plugins.PRUNERS, "x") is os.path.join  # still cached
    plugins.refresh()
    assert plugins.load(plugins.PRUNERS, "x") is os.path.split


def test_a_plugin_that_fails_to_import_is_a_plugin_error(registry):
    registry.setattr(
        plugins, "entry_points", lambda group: [EntryPoint("broken", "no_such_pkg_xyz.mod:plugin", group)]
    )
    plugins.refresh()
    assert plugins.available(plugins.PRUNERS) == ["broken"]  # listing does not import
    with pytest.raises(plugins.PluginError, match=r"cannot import module 'no_such_pkg_xyz\.mod'"):
        plugins.load(plugins.PRUNERS, "broken")


# --- load_object --------------------------------------------------------------------------------


def test_load_object_resolves_modules_and_nested_attributes():
    assert plugins.load_object("os.path:join") is os.path.join
    assert plugins.load_object("os:path.join") is os.path.join
    assert plugins.load_object("torch.nn:Linear") is torch.nn.Linear


@pytest.mark.parametrize("path", ["no_colon", ":Thing", "json:", "", "json.decoder"])
def test_load_object_refuses_malformed_paths(path):
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_object(path)
    assert str(info.value) == f"import path {path!r} is invalid: expected 'package.module:Attribute'"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (
            "not_a_module_xyz:Thing",
            "import path 'not_a_module_xyz:Thing': cannot import module 'not_a_module_xyz'",
        ),
        ("json:nothing_here", "import path 'json:nothing_here': module 'json' has no 'nothing_here'"),
        (
            "os:path.nothing_here",
            "import path 'os:path.nothing_here': module 'os' has no 'path.nothing_here'",
        ),
    ],
)
def test_load_object_names_what_is_missing(path, text):
    with pytest.raises(plugins.PluginError) as info:
        plugins.load_object(path)
    assert str(info.value).startswith(text)


def test_the_installed_example_plugin_records_its_distribution():
    info = plugins.info(plugins.PRUNERS, "example_random")
    assert info.distribution == "shrinkflow-example-plugin" and info.version == "0.1.0"


@pytest.mark.parametrize(("family", "name"), METHODS, ids=[f"{f.rsplit('.', 1)[1]}-{n}" for f, n in METHODS])
def test_every_method_applies_to_a_transformer_on_token_ids_or_refuses_it_at_check(family, name, tmp_path):
    """Text models get the whole method set: each method applies to a transformer_encoder on token
    ids and reloads to the same predictions, or its check refuses the model naming what to use."""
    seed_everything(0)
    plugin = plugins.load(family, name)
    cfg = plugin.config({})
    train, val = _tokens_like(60, seed=0), _tokens_like(20, seed=1)
    encoder = {"vocab_size": 40, "heads": 4, "ffn": 32, "layers": 2}
    base = ModelArtifact.build(ModelSpec("transformer_encoder", {**encoder, "d_model": 16}), (12,), 10)
    teacher = ModelArtifact.build(ModelSpec("transformer_encoder", {**encoder, "d_model": 24}), (12,), 10)
    if name == "channel":
        with pytest.raises(ConfigError, match="use heads"):
            plugin.check(base.model, cfg, (12,))
        return
    if plugin.check is not None:
        plugin.check(base.model, cfg, (12,))
    fit(teacher.model, train, TrainConfig(epochs=2, lr=1e-2))
    ctx = Context(
        train,
        val,
        fit=partial(fit, train=train, cfg=TrainConfig(epochs=1), val=val),
        teacher=teacher.model.eval(),
    )
    model = plugin.apply(base.model, cfg, ctx).eval()
    with torch.inference_mode():
        out = model(val.x)
        assert out.shape == (len(val), 10) and bool(torch.isfinite(out).all())
        assert torch.equal(model(val.x), out)  # eval mode is deterministic (no dropout left on)
    structure = plugin.structure(model) if plugin.structure is not None else None
    artifact.save(base.with_step(model, family, name, cfg.to_dict(), structure), tmp_path / "m.pt")
    with torch.inference_mode():
        assert torch.equal(artifact.load(tmp_path / "m.pt").model(val.x), out)
