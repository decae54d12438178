"""Layer dropping: remove whole transformer layers, then fine-tune.

Sajjad et al. 2023 ("On the Effect of Dropping Layers of Pre-trained Transformer Models") found
that dropping the top layers of a trained encoder and fine-tuning keeps most of its accuracy; it is
the simplest depth reduction and the baseline a distilled shallower student has to beat.
``drop`` names the layers (0-based indices) explicitly; otherwise ``keep`` says how many layers
stay and ``strategy`` which go: ``top`` (the last ones) or ``alternate`` (every other one, from
the second, as DistilBERT initialises its student).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.method import Context, Method
from shrinkflow.core.textmodels import block_list

__all__ = ["LayerDropConfig", "dropped", "layer_drop", "plugin", "restore"]


@dataclass
class LayerDropConfig(Config):
    """``keep``: layers that stay (``strategy`` picks which go: top | alternate), or ``drop``: the
    0-based indices removed (then ``keep`` must be null)."""

    keep: int | None = 2
    strategy: str = "top"
    drop: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice("strategy", self.strategy, ["top", "alternate"])
        if not isinstance(self.drop, list) or not all(isinstance(i, int) and i >= 0 for i in self.drop):
            raise ConfigError("drop", self.drop, "a list of layer indices >= 0")
        if self.drop and self.keep is not None:
            raise ConfigError("keep", self.keep, "null when drop lists the layers to remove")
        if not self.drop:
            if self.keep is None:
                raise ConfigError("keep", self.keep, "the number of layers kept (or a drop list)")
            check_range("keep", self.keep, 1, 10_000, integer=True)


def _layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    found = block_list(model)
    if found is None:
        raise ConfigError(
            "prune.method layer_drop",
            type(model).__name__,
            "a transformer whose layers sit in one ModuleList (transformer_encoder, BERT-style "
            "transformers models)",
        )
    return found


def dropped(cfg: LayerDropConfig, count: int) -> list[int]:
    """The indices ``cfg`` removes from ``count`` layers; ConfigError if that leaves none or names
    a layer that does not exist."""
    if cfg.drop:
        bad = [i for i in cfg.drop if i >= count]
        if bad:
            raise ConfigError("drop", bad, f"indices of the model's {count} layers (0..{count - 1})")
        gone = sorted(set(cfg.drop))
    else:
        assert cfg.keep is not None
        if cfg.keep > count:
            raise ConfigError("keep", cfg.keep, f"at most the model's {count} layers")
        if cfg.strategy == "top":
            gone = list(range(cfg.keep, count))
        else:
            gone = list(range(1, count, 2))[: count - cfg.keep]
            gone += [i for i in range(count - 1, -1, -1) if i not in gone][: count - cfg.keep - len(gone)]
            gone.sort()
    if len(gone) >= count:
        raise ConfigError("drop", gone, f"to leave at least one of the model's {count} layers")
    return gone


def check(model: nn.Module, cfg: LayerDropConfig, input_shape: tuple[int, ...]) -> None:
    dropped(cfg, len(_layers(model)[1]))


def _remove(model: nn.Module, gone: list[int]) -> None:
    _, layers = _layers(model)
    for index in sorted(gone, reverse=True):
        del layers[index]
    config = getattr(getattr(model, "model", model), "config", None)  # transformers keep a count
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(layers)


def layer_drop(model: nn.Module, cfg: LayerDropConfig, ctx: Context) -> nn.Module:
    _remove(model, dropped(cfg, len(_layers(model)[1])))
    ctx.train_model(model, label="layer-drop finetune")
    return model


def structure(model: nn.Module) -> dict[str, Any]:
    """``{"layers": count left}`` (restore removes the same indices the config names)."""
    return {"layers": len(_layers(model)[1])}


def restore(model: nn.Module, cfg: LayerDropConfig, record: dict[str, Any] | None = None) -> nn.Module:
    gone = dropped(cfg, len(_layers(model)[1]))
    _remove(model, gone)
    if record and int(record.get("layers", -1)) != len(_layers(model)[1]):
        raise ConfigError("structure.layers", record.get("layers"), f"{len(_layers(model)[1])} layers left")
    return model


plugin = Method(
    LayerDropConfig,
    layer_drop,
    restore,
    summary="drop whole transformer layers (top or alternate) + fine-tuning",
    structure=structure,
    check=check,
)
