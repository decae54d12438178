"""Static int8 post-training quantization: int8 weights (per channel) and int8 activations whose
scales come from calibration batches (Jacob et al. 2018, "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference"; Krishnamoorthi 2018, per-channel weights).

Two flows, chosen by ``backend``:

* ``pt2e`` (default): ``torch.export`` + torchao's PT2E quantization with the x86 quantizer (see
  ``_pt2e``). It captures any model ``torch.export`` can run, including forwards that branch
  on shapes, torchvision/timm models, residual blocks, depthwise convolutions and BatchNorm, and its
  graph exports to ONNX QDQ that ONNX Runtime runs in int8. In eager PyTorch it runs as a reference
  graph (dequantize -> float op -> quantize): 1.1-2.6x *slower* than fp32 on this 2-core CPU;
  serve it through the ONNX export (``data/06_models/final.onnx``).
* ``fx``: torch.ao's FX graph mode (``prepare_fx`` -> calibrate -> ``convert_fx``), deprecated in
  torch but the one flow with eager int8 kernels: ``QuantizedConvReLU2d``/``QuantizedLinearReLU``
  run fbgemm int8 in plain PyTorch (SeedCNN 1.2x, LeNet-300-100 1.7x faster than fp32 at batch 256,
  1 thread). It needs a model ``torch.fx`` can trace symbolically (no branching on shapes), and its
  x86 activations use 7 bits (``reduce_range``), which ONNX cannot express: the ONNX export then
  saturates at another point and agrees less (resnet20 on noisy digits: 98.1% against 99.1%).

Pruned zeros survive: symmetric int8 weights quantize 0.0 to exactly 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.ao.quantization import (
    HistogramObserver,
    MinMaxObserver,
    QConfig,
    QConfigMapping,
    get_default_qconfig,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.fake_quantize import (
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
)
from torch.ao.quantization.observer import default_per_channel_weight_observer, default_weight_observer
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.data import calibration_batches
from shrinkflow.core.method import Context, Method
from shrinkflow.core.qgraph import is_int8_graph
from shrinkflow.methods.quantization import _pt2e

__all__ = ["StaticInt8Config", "check", "engines", "plugin", "quantized_modules", "saved_backend"]

OBSERVERS = ("histogram", "minmax")
BACKENDS = ("pt2e", "fx")
_INT8_PACKAGES = ("torch.ao.nn.quantized.modules", "torch.ao.nn.intrinsic.quantized.modules")


def engines() -> list[str]:
    """Quantized kernel libraries this torch build supports."""
    return [e for e in torch.backends.quantized.supported_engines if e != "none"]


@dataclass
class StaticInt8Config(Config):
    """``calibration_batches`` x ``batch_size`` training samples fix the activation ranges;
    ``per_channel`` gives each output channel its own weight scale; ``observer`` estimates
    activation ranges (histogram: L2-optimal clipping, minmax: full range); ``backend`` picks the
    flow (pt2e | fx, see the module doc); ``engine`` the int8 kernels of the fx flow."""

    calibration_batches: int = 8
    batch_size: int = 128
    engine: str = "x86"
    per_channel: bool = True
    observer: str = "histogram"
    backend: str = "pt2e"

    def __post_init__(self) -> None:
        check_range("calibration_batches", self.calibration_batches, 1, 100_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1_000_000, integer=True)
        check_choice("engine", self.engine, engines())
        if not isinstance(self.per_channel, bool):
            raise ConfigError("per_channel", self.per_channel, "true or false")
        check_choice("observer", self.observer, OBSERVERS)
        check_choice("backend", self.backend, BACKENDS)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation notices and the 'observer never ran' warnings of restore."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(deprecat|must run observer|quantized tensor).*")
        yield


def weight_observer(per_channel: bool, fake_quant: bool = False) -> Any:
    """torch's symmetric int8 weight observers (zero point 0: pruned zeros stay exactly zero)."""
    if fake_quant:
        return default_fused_per_channel_wt_fake_quant if per_channel else default_fused_wt_fake_quant
    return default_per_channel_weight_observer if per_channel else default_weight_observer


def _reduce_range(engine: str) -> bool:
    # x86/fbgemm use 7-bit activations to avoid int16 overflow in the AVX2 kernels (torch's default).
    return bool(get_default_qconfig(engine).activation.p.keywords.get("reduce_range", False))


def qconfig_mapping(cfg: StaticInt8Config) -> QConfigMapping:
    """The engine's default mapping (it keeps fixed-qparams ops right) with our global qconfig."""
    reduce = _reduce_range(cfg.engine)
    activation = (HistogramObserver if cfg.observer == "histogram" else MinMaxObserver).with_args(
        reduce_range=reduce
    )
    return get_default_qconfig_mapping(cfg.engine).set_global(
        QConfig(activation=activation, weight=weight_observer(cfg.per_channel))
    )


def quantized_modules(model: nn.Module) -> dict[str, str]:
    """{qualified name: class name} of every module running int8 kernels."""
    return {
        name: type(m).__name__
        for name, m in model.named_modules()
        if type(m).__module__.startswith(_INT8_PACKAGES) and hasattr(m, "scale")
    }


def example_inputs(input_shape: list[int] | tuple[int, ...]) -> tuple[torch.Tensor]:
    return (torch.zeros(1, *input_shape),)


def trace_error(exc: Exception, model: nn.Module, method: str = "static_int8") -> ConfigError:
    return ConfigError(
        "model",
        type(model).__name__,
        f"a model torch.fx can trace for {method} with backend fx ({type(exc).__name__}: {str(exc)[:200]}); "
        "use backend: pt2e (torch.export follows shape-dependent code), or dynamic_int8",
    )


def _pause_determinism(module: nn.Module, args: Any) -> None:
    module.meta["shrinkflow_determinism"] = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(False)


def _resume_determinism(module: nn.Module, args: Any, output: Any) -> None:
    enabled, warn_only = module.meta.pop("shrinkflow_determinism", (False, False))
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def convert(prepared: fx.GraphModule, input_shape: list[int] | tuple[int, ...]) -> fx.GraphModule:
    """``convert_fx`` and record what ``structure``/``restore`` need on the graph module."""
    with quiet():
        converted = convert_fx(prepared.eval())
    if not quantized_modules(converted):
        raise ConfigError("model", type(prepared).__name__, "a model with Linear or Conv layers to quantize")
    converted.meta["shrinkflow_input_shape"] = [int(d) for d in input_shape]
    # Every int8 op resizes its output with quantized_resize_cpu_, which deterministic mode (set by
    # the pipeline's seeding hook) reports on each call straight from C++ (no Python filter reaches
    # it). The output is fully overwritten, so results are reproducible: pause the mode per forward.
    converted.register_forward_pre_hook(_pause_determinism)
    converted.register_forward_hook(_resume_determinism, always_call=True)
    return converted


def structure(model: nn.Module) -> dict[str, Any]:
    meta = getattr(model, "meta", {})
    shape = meta.get("shrinkflow_input_shape")
    if is_int8_graph(model):
        return {"backend": "pt2e", "input_shape": shape, "qparams": _pt2e.qparams(model)}
    return {"backend": "fx", "input_shape": shape, "modules": quantized_modules(model)}


def saved_backend(structure: dict[str, Any] | None) -> str:
    """The flow an artifact was made with (artifacts from before PT2E carry no backend: fx)."""
    return str((structure or {}).get("backend", "fx"))


def check_restored(model: nn.Module, record: dict[str, Any] | None) -> nn.Module:
    """The rebuilt model must quantize the same modules as the saved one (same torch flow)."""
    if record and record.get("modules") and quantized_modules(model) != record["modules"]:
        raise ConfigError(
            "structure.modules", quantized_modules(model), f"the saved quantized modules {record['modules']}"
        )
    return model


def check(model: nn.Module, cfg: StaticInt8Config, input_shape: Any) -> None:
    """Before training: the model must be capturable by the chosen flow (raises ConfigError)."""
    if cfg.backend == "pt2e":
        _pt2e.prepare(model, input_shape, cfg.per_channel, cfg.observer, qat=False, method="static_int8")
        return
    try:
        with quiet():
            prepare_fx(model.eval(), qconfig_mapping(cfg), example_inputs(input_shape))
    except Exception as exc:  # torch.fx raises TraceError, TypeError, ... on untraceable code
        raise trace_error(exc, model) from exc


def static_int8(model: nn.Module, cfg: StaticInt8Config, ctx: Context) -> nn.Module:
    if cfg.backend == "pt2e":
        shape = ctx.train.input_shape
        prepared = _pt2e.prepare(model, shape, cfg.per_channel, cfg.observer, qat=False, method="static_int8")
        with torch.no_grad():
            for batch in calibration_batches(ctx.train, cfg.calibration_batches, cfg.batch_size):
                prepared(batch)
        return _pt2e.convert(prepared, shape)
    torch.backends.quantized.engine = cfg.engine
    inputs = example_inputs(ctx.train.input_shape)
    try:
        with quiet():
            prepared = prepare_fx(model.eval(), qconfig_mapping(cfg), inputs)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, ... on untraceable code
        raise trace_error(exc, model) from exc
    with torch.inference_mode(), quiet():
        for batch in calibration_batches(ctx.train, cfg.calibration_batches, cfg.batch_size):
            prepared(batch)
    return convert(prepared, ctx.train.input_shape)


def restore(model: nn.Module, cfg: StaticInt8Config, structure: dict[str, Any] | None = None) -> nn.Module:
    """Prepare and convert the fresh model without calibration; the state_dict then brings the
    weights, scales and zero points (FX ignores the example input's values). PT2E graphs are
    rebuilt the same way and get their per-tensor qparams from ``structure``."""
    if saved_backend(structure) == "pt2e":
        return _pt2e.restore(model, structure, cfg.per_channel, cfg.observer, qat=False, method="static_int8")
    torch.backends.quantized.engine = cfg.engine
    shape = (structure or {}).get("input_shape") or [1]
    with quiet():
        prepared = prepare_fx(model.eval(), qconfig_mapping(cfg), example_inputs(shape))
    return check_restored(convert(prepared, shape), structure)


plugin = Method(
    StaticInt8Config,
    static_int8,
    restore,
    summary="static int8 PTQ: per-channel int8 weights, calibrated int8 activations (torch.export PT2E, or FX)",
    structure=structure,
    check=check,
)
