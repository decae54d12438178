"""Quantization-aware training (Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference"), optionally with the teacher's soft targets
(Hinton et al. 2015), then conversion to a real int8 model.

Flow, by ``backend`` as in ``static_int8``: ``pt2e`` (default) captures the model with
``torch.export`` in training mode and ``prepare_qat_pt2e`` inserts fake quantizers (BatchNorm kept
as a training op beside the convolution it folds into at conversion); ``fx``: ``prepare_qat_fx`` inserts
fake-quant modules (symmetric int8 weights, per channel by default; uint8 activations with moving
min/max ranges), a few calibration batches initialise the ranges, ``ctx.train_model`` fine-tunes with
the quantize stage's ``finetune`` config, and ``convert_fx`` swaps in int8 modules. The loss is
``kd_alpha * T^2 * KL + (1 - kd_alpha) * CE`` when a teacher is present and ``kd_alpha > 0``, else CE.

``keep_sparsity`` holds existing exact zeros at zero during fine-tuning: with ``frozen_zeros``
(torch.nn.utils.prune masks on the prepared QAT modules, which subclass nn.Linear/nn.Conv2d; the mask
hook runs inside the traced graph's module calls) for fx, with ``_pt2e.zeros_held`` for pt2e graphs. Symmetric quantization maps them to int8 zeros.
``freeze_after_epochs`` stops range observers and BatchNorm statistics after that many epochs, as in
the paper; epochs are counted from the samples the loss sees, since the stage trains in one call.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.ao.nn.intrinsic.qat import freeze_bn_stats
from torch.ao.quantization import QConfig, QConfigMapping, disable_observer, get_default_qat_qconfig
from torch.ao.quantization import get_default_qat_qconfig_mapping as default_mapping
from torch.ao.quantization.quantize_fx import prepare_qat_fx

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.data import calibration_batches
from shrinkflow.core.method import Context, Method
from shrinkflow.core.sparsity import frozen_zeros
from shrinkflow.methods.distillation.soft_kd import SoftKDConfig, soft_target_loss
from shrinkflow.methods.quantization import _pt2e
from shrinkflow.methods.quantization.static_int8 import (
    BACKENDS,
    check_restored,
    convert,
    engines,
    example_inputs,
    quiet,
    saved_backend,
    structure,
    trace_error,
    weight_observer,
)

__all__ = ["QATConfig", "plugin"]

log = logging.getLogger(__name__)


@dataclass
class QATConfig(Config):
    """``kd_alpha``/``temperature``: soft-target loss weight and temperature (used only with a
    teacher); ``keep_sparsity``: exact zeros stay zero; ``freeze_after_epochs``: freeze ranges and
    BN statistics after that many epochs (null: never); ``calibration_batches`` x ``batch_size``
    samples initialise the ranges before training; ``engine``/``per_channel``/``backend`` as in
    static_int8."""

    kd_alpha: float = 0.5
    temperature: float = 4.0
    keep_sparsity: bool = True
    freeze_after_epochs: int | None = None
    calibration_batches: int = 8
    batch_size: int = 128
    engine: str = "x86"
    per_channel: bool = True
    backend: str = "pt2e"

    def __post_init__(self) -> None:
        check_range("kd_alpha", self.kd_alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        for key in ("keep_sparsity", "per_channel"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")
        if self.freeze_after_epochs is not None:
            check_range("freeze_after_epochs", self.freeze_after_epochs, 1, 10_000, integer=True)
        check_range("calibration_batches", self.calibration_batches, 1, 100_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1_000_000, integer=True)
        check_choice("engine", self.engine, engines())
        check_choice("backend", self.backend, BACKENDS)


def qat_qconfig_mapping(cfg: QATConfig) -> QConfigMapping:
    """The engine's default QAT mapping with our weight fake-quant (per channel or per tensor)."""
    activation = get_default_qat_qconfig(cfg.engine).activation
    return default_mapping(cfg.engine).set_global(
        QConfig(activation=activation, weight=weight_observer(cfg.per_channel, fake_quant=True))
    )


def _prepare(model: nn.Module, cfg: QATConfig, input_shape: Any) -> nn.Module:
    if cfg.backend == "pt2e":
        return _pt2e.prepare(model, input_shape, cfg.per_channel, "minmax", qat=True, method="qat")
    torch.backends.quantized.engine = cfg.engine
    try:
        with quiet():
            return prepare_qat_fx(model.train(), qat_qconfig_mapping(cfg), example_inputs(input_shape))
    except Exception as exc:  # torch.fx raises TraceError, TypeError, ... on untraceable code
        raise trace_error(exc, model, "qat") from exc


def _freeze(prepared: nn.Module, cfg: QATConfig) -> None:
    """Stop the range observers, and (fx) BatchNorm statistics. An exported graph has no BatchNorm
    modules to freeze: its BN statistics keep their momentum updates (pt2e)."""
    if cfg.backend == "pt2e":
        prepared.apply(_pt2e.observers_off())
        return
    prepared.apply(disable_observer)
    prepared.apply(freeze_bn_stats)


def check(model: nn.Module, cfg: QATConfig, input_shape: Any) -> None:
    """Before training: the model must be capturable by the chosen flow (raises ConfigError)."""
    _prepare(model, cfg, input_shape)


def _loss(cfg: QATConfig, ctx: Context, prepared: nn.Module) -> Any:
    """CE or soft-target KD; it also counts samples to freeze observers after ``freeze_after_epochs``."""
    if cfg.kd_alpha > 0 and ctx.teacher is not None:
        base = soft_target_loss(ctx.teacher, SoftKDConfig(temperature=cfg.temperature, alpha=cfg.kd_alpha))
    else:
        base = lambda logits, _x, y: F.cross_entropy(logits, y)  # noqa: E731
    freeze_at = None if cfg.freeze_after_epochs is None else cfg.freeze_after_epochs * len(ctx.train)
    seen = 0

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal seen
        loss = base(logits, x, y)
        seen += len(x)
        if freeze_at is not None and seen - len(x) < freeze_at <= seen:
            log.info("qat: freezing activation ranges and BN statistics after %d samples", seen)
            _freeze(prepared, cfg)
        return loss

    return loss_fn


def qat(model: nn.Module, cfg: QATConfig, ctx: Context) -> nn.Module:
    shape = ctx.train.input_shape
    prepared = _prepare(model, cfg, shape)
    prepared.eval()  # calibration: observers and fake quant on, dropout off
    with torch.no_grad(), quiet():
        for batch in calibration_batches(ctx.train, cfg.calibration_batches, cfg.batch_size):
            prepared(batch)
    before = len(ctx.history)
    held = _pt2e.zeros_held if cfg.backend == "pt2e" else frozen_zeros
    with held(prepared) if cfg.keep_sparsity else nullcontext(), quiet():
        ctx.train_model(prepared, _loss(cfg, ctx, prepared), label="qat")
    if len(ctx.history) == before:
        log.warning("qat: the stage's finetune has 0 epochs; this is post-training quantization")
    if cfg.backend == "pt2e":
        return _pt2e.convert(prepared, shape)
    return convert(prepared, shape)


def restore(model: nn.Module, cfg: QATConfig, structure: dict[str, Any] | None = None) -> nn.Module:
    """Re-prepare and convert the fresh model untrained; the state_dict brings weights and qparams."""
    if saved_backend(structure) == "pt2e":
        return _pt2e.restore(model, structure, cfg.per_channel, "minmax", qat=True, method="qat")
    shape = (structure or {}).get("input_shape") or [1]
    return check_restored(convert(_prepare(model, cfg, shape), shape), structure)


plugin = Method(
    QATConfig,
    qat,
    restore,
    summary="quantization-aware training (fake quant, optional soft targets), then int8 (PT2E, or FX)",
    structure=structure,
    check=check,
)
