"""Layer dropping: which layers go, physical removal, reload, errors."""

from __future__ import annotations

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import MLP, ModelSpec
from shrinkflow.core.textmodels import encoder_blocks
from shrinkflow.methods.pruning.layerdrop import LayerDropConfig, check, dropped, layer_drop, plugin

SPEC = ModelSpec(
    "transformer_encoder", {"vocab_size": 200, "d_model": 32, "heads": 4, "layers": 4, "ffn": 64}
)


@pytest.mark.parametrize(
    ("options", "gone"),
    [
        ({"keep": 2}, [2, 3]),
        ({"keep": 2, "strategy": "alternate"}, [1, 3]),
        ({"keep": 1, "strategy": "alternate"}, [1, 2, 3]),
        ({"keep": None, "drop": [0, 2]}, [0, 2]),
    ],
)
def test_the_layers_dropped(options, gone):
    assert dropped(LayerDropConfig(**options), 4) == gone


def test_dropping_layers_removes_them_and_the_recipe_reloads(make_text_ctx, text_splits, tmp_path):
    base = ModelArtifact.build(SPEC, (16,), 2)
    model = base.model
    kept = [b.layer for b in encoder_blocks(model)][:2]
    cfg = LayerDropConfig(keep=2)
    out = layer_drop(model, cfg, make_text_ctx(epochs=1))
    assert [b.layer for b in encoder_blocks(out)] == kept
    artifact.save(
        base.with_step(out, plugins.PRUNERS, "layer_drop", cfg.to_dict(), plugin.structure(out)),
        tmp_path / "a",
    )
    reloaded = artifact.load(tmp_path / "a").model.eval()
    x = text_splits[2].for_eval().head(8)
    with torch.no_grad():
        assert torch.equal(reloaded(x), out.eval()(x))


def test_impossible_drops_fail_naming_the_value():
    model = ModelArtifact.build(SPEC, (16,), 2).model
    with pytest.raises(ConfigError, match="at most the model's 4 layers"):
        check(model, LayerDropConfig(keep=5), (16,))
    with pytest.raises(ConfigError, match=r"indices of the model's 4 layers"):
        check(model, LayerDropConfig(keep=None, drop=[4]), (16,))
    with pytest.raises(ConfigError, match="at least one"):
        check(model, LayerDropConfig(keep=None, drop=[0, 1, 2, 3]), (16,))
    with pytest.raises(ConfigError, match="transformer"):
        check(MLP((1, 8, 8), 10), LayerDropConfig(), (1, 8, 8))
    with pytest.raises(ConfigError, match="keep"):
        LayerDropConfig(keep=2, drop=[1])
