"""int8 through ``torch.export`` and PT2E quantization (torchao), for ``static_int8`` and ``qat``.

Why this flow: ``torch.export`` traces by running the model on an example batch and specializes on
shapes, so a ``forward`` that branches on ``x.dim()`` or reads ``x.shape`` (which ``torch.fx``
symbolic tracing cannot follow) exports; torchvision's models, residual blocks that call one ReLU
module twice, depthwise convolutions and BatchNorm all go through. torch.ao's FX flow is deprecated
in favour of this one (torchao's ``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``).

Steps: export with a dynamic batch dimension (an example batch of 2: export specializes sizes 0 and
1) -> ``prepare_pt2e`` (or ``prepare_qat_pt2e``) with the x86 quantizer (BatchNorm folded into the
convolution, per-channel symmetric int8 weights, uint8 activations with calibrated ranges; Conv+BN+
ReLU, Linear+ReLU and residual adds annotated as int8 patterns) -> calibration (or training) ->
``convert_pt2e`` with folded int8 weights -> the fp32 originals dropped. The result runs as a
reference graph (dequantize -> float op -> quantize), which ONNX export turns into QDQ that ONNX
Runtime fuses into int8 kernels.

Restoring in a new process: weights, per-channel scales and zero points are graph constants in the
state_dict, but per-tensor scales and zero points (every activation) are Python numbers baked into
the graph's ``quantize_per_tensor``/``dequantize_per_tensor`` calls. :func:`structure` records
them by node name; :func:`restore` rebuilds the same graph from a fresh model (export and prepare
are deterministic), runs one zero batch so each observer has shapes, converts, and writes the
recorded numbers back into the graph, so the state_dict then loads strictly.

Activations use the full uint8 range (``reduce_range: false``): ONNX ``QuantizeLinear`` always
saturates at the type's limits (0..255), so a graph clamping at 127 cannot be exported faithfully
(measured: ONNX Runtime agreed with a 7-bit resnet20 on 76% of noisy digits, 99.1% at 8 bits).
"""

from __future__ import annotations

import dataclasses
import logging
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import fx, nn

from shrinkflow.core.config import ConfigError
from shrinkflow.core.qgraph import graph_constant, graph_layers
from shrinkflow.core.textmodels import example_tokens, takes_tokens

__all__ = [
    "capture",
    "convert",
    "export_error",
    "prepare",
    "qparams",
    "restore",
    "set_qparams",
    "zeros_held",
]

log = logging.getLogger(__name__)
#: int8 weights use 7 bits. ONNX Runtime's int8 kernels on x86 CPUs without VNNI (AVX2, AVX-512)
#: multiply uint8 activations by int8 weights with ``vpmaddubsw``, which adds adjacent products into
#: a saturating int16: 255 * 128 * 2 overflows it, 255 * 64 * 2 = 32,640 does not. Measured on the
#: digits MLP (AVX2): full-range weights put 2.8% of the pair sums past int16 and the exported graph's
#: logits 0.77 away from PyTorch's (logits span 13); with 7 bits the two agree to requantization
#: rounding. ONNX Runtime's own quantizer mitigates the same way (``reduce_range``: 7-bit weights).
#: Activations keep 8 bits: ONNX ``QuantizeLinear`` cannot clamp to 7.
WEIGHT_RANGE = (-64, 63)
_PER_TENSOR = (
    "quantized_decomposed.quantize_per_tensor.default",
    "quantized_decomposed.dequantize_per_tensor.default",
)


def _torchao() -> types.SimpleNamespace:
    """torchao's PT2E entry points, imported on first use (importing torchao takes about 2 s).
    torchao 0.18 registers an Enum with torch's pytree on import, which torch 2.14 logs as a
    deprecation warning on every run; that one logger is quieted for the import."""
    pytree_log = logging.getLogger("torch.utils._pytree")
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e, prepare_qat_pt2e
    except ImportError as exc:
        raise ConfigError(
            "backend", "pt2e", f"torchao installed (pip install torchao; {exc}); or backend: fx"
        ) from exc
    finally:
        pytree_log.setLevel(level)
    return types.SimpleNamespace(
        pt2e=pt2e, xiq=xiq, prepare=prepare_pt2e, prepare_qat=prepare_qat_pt2e, convert=convert_pt2e
    )


def export_error(model: nn.Module, exc: Exception, method: str) -> ConfigError:
    """What a user reads when ``torch.export`` cannot capture their model."""
    return ConfigError(
        "model",
        type(model).__name__,
        f"a model torch.export can capture for {method} ({type(exc).__name__}: {str(exc)[:300]}); "
        "data-dependent control flow (branching on tensor values) cannot be captured: rewrite it with "
        "torch.cond, or use dynamic_int8, weight_sharing or half, which quantize modules in place",
    )


def example_input(model: nn.Module, input_shape: Any) -> tuple[torch.Tensor, dict[int, Any]]:
    """A batch of 2 to trace ``model`` with and its dynamic dimensions: the batch, and for token ids
    (int64) the sentence length up to ``input_shape[0]``."""
    from torch.export import Dim

    if takes_tokens(model, input_shape):
        return example_tokens(2, max(3, int(input_shape[0]))), {
            0: Dim("batch"),
            1: Dim("sequence", max=int(input_shape[0])),
        }
    return torch.zeros(2, *input_shape), {0: Dim("batch")}


def capture(model: nn.Module, input_shape: Any, method: str, train: bool = False) -> fx.GraphModule:
    """``torch.export`` with a dynamic batch dimension; raises ConfigError naming the construct."""
    from torch.export import export

    example, dims = example_input(model, input_shape)
    model.train(train)
    try:
        graph = export(model, (example,), dynamic_shapes=(dims,)).module()
    except Exception as exc:  # torch.export raises UserError, Unsupported, GuardOnDataDependent, ...
        raise export_error(model, exc, method) from exc
    return _distinct_calls(graph)


def _distinct_calls(graph: fx.GraphModule) -> fx.GraphModule:
    """Give each call of a module called more than once its own module path in the node metadata.

    Written by hand because no library does it: torchvision's BasicBlock calls ``self.relu`` twice,
    export records both calls under one path, and the x86 quantizer then groups them into one
    pattern with two outputs ("Input partition has more than one output node"). Each connected
    group of nodes under one path is one call; the second and later get ``<path>@call<i>``.
    """
    groups: dict[str, list[fx.Node]] = {}
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            groups.setdefault(list(stack.values())[-1][0], []).append(node)
    for path, nodes in groups.items():
        members, root = set(nodes), {n: n for n in nodes}

        def find(n: fx.Node, root: dict[fx.Node, fx.Node] = root) -> fx.Node:
            while root[n] is not n:
                n = root[n]
            return n

        for node in nodes:
            for arg in node.all_input_nodes:
                if arg in members:
                    root[find(node)] = find(arg)
        calls: dict[fx.Node, list[fx.Node]] = {}
        for node in nodes:
            calls.setdefault(find(node), []).append(node)
        for i, call in enumerate(list(calls.values())[1:], start=1):
            for node in call:
                stack = dict(node.meta["nn_module_stack"])
                key = list(stack)[-1]
                stack[key] = (f"{path}@call{i}", stack[key][1])
                node.meta["nn_module_stack"] = stack
    return graph


def quantizer(per_channel: bool, observer: str, qat: bool) -> Any:
    """torchao's x86 quantizer: symmetric 7-bit weights in int8 (per channel, or one scale per
    tensor; :data:`WEIGHT_RANGE`), uint8 activations over the full range with a histogram (or
    min/max) observer."""
    ao = _torchao()
    cfg = ao.xiq.get_default_x86_inductor_quantization_config(is_qat=qat, reduce_range=False)
    if not qat and observer == "minmax":
        act = dataclasses.replace(
            cfg.input_activation, observer_or_fake_quant_ctr=ao.pt2e.MinMaxObserver.with_args(eps=2**-12)
        )
        cfg = dataclasses.replace(cfg, input_activation=act, output_activation=act)
    if not per_channel:
        ctr = (
            ao.pt2e.FusedMovingAvgObsFakeQuantize.with_args(
                observer=ao.pt2e.MovingAverageMinMaxObserver, eps=2**-12
            )
            if qat
            else ao.pt2e.MinMaxObserver.with_args(eps=2**-12)
        )
        weight = dataclasses.replace(
            cfg.weight, qscheme=torch.per_tensor_symmetric, ch_axis=None, observer_or_fake_quant_ctr=ctr
        )
        cfg = dataclasses.replace(cfg, weight=weight)
    weight = dataclasses.replace(cfg.weight, quant_min=WEIGHT_RANGE[0], quant_max=WEIGHT_RANGE[1])
    return ao.xiq.X86InductorQuantizer().set_global(dataclasses.replace(cfg, weight=weight))


def observers_off() -> Any:
    """torchao's ``disable_observer`` (for ``module.apply``): ranges stay as observed so far."""
    return _torchao().pt2e.disable_observer


def _train_eval(graph: fx.GraphModule) -> fx.GraphModule:
    """Make ``.train()``/``.eval()`` work on an exported graph (they raise by default): torchao
    swaps the BatchNorm and dropout patterns. Unlike torchao's own helper these return the module,
    so ``model.eval()`` chains as on any nn.Module."""
    ao = _torchao()

    def train(self: fx.GraphModule, mode: bool = True) -> fx.GraphModule:
        (ao.pt2e.move_exported_model_to_train if mode else ao.pt2e.move_exported_model_to_eval)(self)
        for module in self.modules():
            module.training = mode
        return self

    graph.train = types.MethodType(train, graph)  # type: ignore[method-assign]
    graph.eval = types.MethodType(lambda self: self.train(False), graph)  # type: ignore[method-assign]
    return graph


def prepare(
    model: nn.Module, input_shape: Any, per_channel: bool, observer: str, qat: bool, method: str
) -> fx.GraphModule:
    """The model captured and annotated: observers (PTQ) or fake quantizers (QAT) in place."""
    ao = _torchao()
    graph = capture(model, input_shape, method, train=qat)
    q = quantizer(per_channel, observer, qat)
    try:
        prepared = (ao.prepare_qat if qat else ao.prepare)(graph, q)
    except Exception as exc:  # the quantizer's pattern matching raises ValueError, RuntimeError, ...
        raise export_error(model, exc, method) from exc
    return _train_eval(prepared)


def _drop_dead_constants(graph: fx.GraphModule) -> fx.GraphModule:
    """``convert_pt2e`` leaves the fp32 weights registered beside their int8 copies; drop every
    parameter and buffer no ``get_attr`` reads, so the state_dict holds what runs."""
    used = {str(n.target) for n in graph.graph.nodes if n.op == "get_attr"}
    for name in [k for k in graph.state_dict() if k not in used]:
        path, _, leaf = name.rpartition(".")
        owner = graph.get_submodule(path) if path else graph
        owner._parameters.pop(leaf, None)
        owner._buffers.pop(leaf, None)
    return graph


_DQ_TENSOR = "quantized_decomposed.dequantize_per_tensor.default"
_DQ_CHANNEL = "quantized_decomposed.dequantize_per_channel.default"


def _int32_biases(graph: fx.GraphModule) -> fx.GraphModule:
    """Every float bias of an int8 Linear/Conv becomes int32 with scale = input scale x weight
    scale (per output channel for per-channel weights, else one number) and zero point 0,
    dequantized in the graph.

    Written by hand because torchao's x86 config leaves biases float (and its QAT flow folds
    BatchNorm into a float bias at conversion). int8 runtimes add the bias in the int32
    accumulator: ONNX Runtime quantizes a float bias itself when it loads a QDQ graph (its
    ``WeightBiasQuantization`` pass), so a graph with float biases and its export differ by the
    bias rounding, which flips activation roundings that then propagate through the network
    (MobileNetV2 0.25 on digits: 97.5% argmax agreement with float biases, 100% with int32 ones).
    Quantizing the bias here makes PyTorch and the export compute the same numbers.
    """
    count = 0
    for node, _ in graph_layers(graph):
        if len(node.args) < 3:
            continue
        x, weight, bias = node.args[0], node.args[1], node.args[2]
        if not (isinstance(bias, fx.Node) and bias.op == "get_attr" and isinstance(x, fx.Node)):
            continue
        if str(x.target) != _DQ_TENSOR or not isinstance(x.args[1], (int, float)):
            continue
        if not isinstance(weight, fx.Node) or str(weight.target) not in (_DQ_TENSOR, _DQ_CHANNEL):
            continue
        float_bias = graph_constant(graph, bias).detach()
        name = f"_int32_bias_{count}"
        if str(weight.target) == _DQ_TENSOR:  # one weight scale: the bias scale is a number too
            scale = float(x.args[1]) * float(weight.args[1])
            graph.register_buffer(name, _to_int32(float_bias, torch.tensor(scale, dtype=torch.float64)))
            with graph.graph.inserting_before(node):
                args: tuple[Any, ...] = (
                    graph.graph.get_attr(name),
                    scale,
                    0,
                    -(2**31),
                    2**31 - 1,
                    torch.int32,
                )
                dq = graph.graph.call_function(
                    torch.ops.quantized_decomposed.dequantize_per_tensor.default, args
                )
        else:
            scales = (float(x.args[1]) * graph_constant(graph, weight.args[1]).detach().double()).float()
            graph.register_buffer(name, _to_int32(float_bias, scales.double()))
            graph.register_buffer(f"{name}_scale", scales)
            # always zero, rebuilt with the graph: kept out of the state_dict (8 bytes per channel)
            graph.register_buffer(
                f"{name}_zero_point", torch.zeros_like(scales, dtype=torch.int64), persistent=False
            )
            with graph.graph.inserting_before(node):
                attrs = [graph.graph.get_attr(n) for n in (name, f"{name}_scale", f"{name}_zero_point")]
                args = (*attrs, 0, -(2**31), 2**31 - 1, torch.int32)
                dq = graph.graph.call_function(
                    torch.ops.quantized_decomposed.dequantize_per_channel.default, args
                )
        node.replace_input_with(bias, dq)
        count += 1
    graph.graph.eliminate_dead_code()
    graph.recompile()
    return graph


def _to_int32(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.round(bias.double() / scale).clamp(-(2**31), 2**31 - 1).to(torch.int32)


def convert(prepared: fx.GraphModule, input_shape: Any) -> fx.GraphModule:
    """int8 weights folded into the graph, int32 biases, observers removed, eval mode, dead
    constants dropped."""
    ao = _torchao()
    prepared.eval()
    converted = ao.convert(prepared, fold_quantize=True)
    _train_eval(converted).eval()
    _int32_biases(converted)
    _drop_dead_constants(converted)
    for p in converted.parameters():
        p.requires_grad_(False)
    converted.meta["shrinkflow_input_shape"] = [int(d) for d in input_shape]
    return converted


def qparams(graph: fx.GraphModule) -> dict[str, list[float]]:
    """{node name: [scale, zero point]} of every per-tensor quantize/dequantize call."""
    out = {}
    for node in graph.graph.nodes:
        if node.op == "call_function" and str(node.target) in _PER_TENSOR:
            scale, zero_point = node.args[1], node.args[2]
            if isinstance(scale, (int, float)) and isinstance(zero_point, int):
                out[node.name] = [float(scale), float(zero_point)]
    return out


def set_qparams(graph: fx.GraphModule, values: dict[str, list[float]]) -> fx.GraphModule:
    """Write recorded per-tensor scales and zero points into the rebuilt graph."""
    found = qparams(graph)
    if set(found) != set(values):
        raise ConfigError(
            "structure.qparams",
            sorted(set(values) ^ set(found))[:6],
            "the quantize/dequantize calls of the saved graph (the model or the torch/torchao version differs)",
        )
    for node in graph.graph.nodes:
        if node.name in values:
            scale, zero_point = values[node.name]
            args = list(node.args)
            args[1], args[2] = float(scale), int(zero_point)
            node.args = tuple(args)
    graph.recompile()
    return graph


def restore(
    model: nn.Module,
    structure: dict[str, Any] | None,
    per_channel: bool,
    observer: str,
    qat: bool,
    method: str,
) -> fx.GraphModule:
    """The saved int8 graph rebuilt from a fresh model (see the module doc)."""
    structure = structure or {}
    shape = structure.get("input_shape")
    if not shape:
        raise ConfigError("structure.input_shape", shape, "the input shape the int8 graph was captured with")
    example = example_input(model, shape)[0]
    prepared = prepare(model, shape, per_channel, observer, qat, method)
    prepared.eval()
    with torch.no_grad():
        prepared(example)  # shapes for every observer; values come from the file
    return set_qparams(convert(prepared, shape), structure.get("qparams") or {})


@contextmanager
def zeros_held(graph: fx.GraphModule) -> Iterator[fx.GraphModule]:
    """Exact-zero Linear/Conv weights of an exported graph stay zero while training in this block.

    ``torch.nn.utils.prune`` (what ``core.sparsity.frozen_zeros`` uses for modules) needs module
    calls to hook; an exported graph reads its weights as attributes, so the masks are applied to
    the parameters before every forward and once more at the end.
    """
    masks = {
        name: p.detach() != 0
        for name, p in graph.named_parameters()
        if name.endswith("weight") and p.ndim >= 2 and not bool((p != 0).all())
    }
    params = dict(graph.named_parameters())

    def apply(*_: Any) -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                params[name].mul_(mask)

    handle = graph.register_forward_pre_hook(apply) if masks else None
    try:
        yield graph
    finally:
        if handle is not None:
            handle.remove()
            apply()
