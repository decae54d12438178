"""Reading int8 graphs: the models that ``torch.export`` + PT2E quantization produce.

A PT2E int8 model (``static_int8``/``qat`` with ``backend: pt2e``) is a ``torch.fx.GraphModule``
without Linear or Conv modules: each layer is an ``aten.linear``/``aten.conv*`` call whose weight
argument is ``dequantize_per_channel(int8 tensor, scales, zero points)`` (or per tensor) of
constants the graph holds, and whose activations pass through ``quantize``/``dequantize`` pairs.
Measuring such a model (weights, sparsity, MACs) reads those calls; this module does it for
``core`` (which must not import torchao) by op name, so it needs nothing but torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import fx, nn

__all__ = ["graph_constant", "graph_layers", "graph_macs", "graph_weights", "is_int8_graph"]

_LAYER_OPS = ("aten.linear", "aten.conv1d", "aten.conv2d", "aten.conv3d")
_QD = "quantized_decomposed."


def _op(node: fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


def is_int8_graph(model: nn.Module) -> bool:
    """A graph module holding int8 quantize/dequantize ops (a PT2E int8 model)."""
    return isinstance(model, fx.GraphModule) and any(_op(n).startswith(_QD) for n in model.graph.nodes)


def _layer_name(node: fx.Node, index: int) -> str:
    """The module the call came from (``layers.0.conv1``), from the exporter's module stack."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        fqn = list(stack.values())[-1][0]
        return str(fqn).split("@", 1)[0]  # drop a per-call suffix given to reused modules
    return f"{node.name}#{index}"


def _value(gm: fx.GraphModule, node: Any) -> Any:
    """A constant argument: a graph attribute, a dequantize of attributes (evaluated), or a literal."""
    if not isinstance(node, fx.Node):
        return node
    if node.op == "get_attr":
        return graph_constant(gm, node)
    if _op(node).startswith(_QD + "dequantize"):
        args = [_value(gm, a) for a in node.args]
        if any(a is None for a in args):
            return None
        return node.target(*args, **node.kwargs)
    return None


def graph_constant(gm: fx.GraphModule, node: fx.Node) -> Any:
    """The tensor a ``get_attr`` node reads (None if the graph holds no such attribute)."""
    owner: Any = gm
    for part in str(node.target).split("."):
        owner = getattr(owner, part, None)
    return owner


def graph_layers(model: fx.GraphModule) -> list[tuple[fx.Node, str]]:
    """(call node, layer name) of every Linear/Conv call, in graph order."""
    layers = [n for n in model.graph.nodes if _op(n).startswith(_LAYER_OPS)]
    return [(node, _layer_name(node, i)) for i, node in enumerate(layers)]


def graph_weights(model: fx.GraphModule) -> Iterator[tuple[str, torch.Tensor]]:
    """(``<layer>.weight``/``<layer>.bias``, float tensor) of every Linear/Conv call: int8 weights
    dequantized, exactly as the graph computes with them."""
    seen: set[str] = set()
    for node, name in graph_layers(model):
        for i, attr in ((1, "weight"), (2, "bias")):
            value = _value(model, node.args[i]) if len(node.args) > i else None
            key = f"{name}.{attr}"
            if isinstance(value, torch.Tensor) and key not in seen:
                seen.add(key)
                yield key, value.detach().float()


def graph_macs(model: fx.GraphModule, sample: torch.Tensor) -> tuple[int, int]:
    """(dense, non-zero) multiply-accumulates of one forward pass of one sample, over the graph's
    Linear/Conv calls (what ``measure.count_macs`` counts for modules)."""
    weights = {node: _value(model, node.args[1]) for node, _ in graph_layers(model)}
    counts = [0, 0]

    class Counter(fx.Interpreter):
        def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
            out = super().call_function(target, args, kwargs)
            weight = weights.get(self._node)
            if isinstance(weight, torch.Tensor) and isinstance(out, torch.Tensor) and weight.ndim >= 2:
                positions = out.numel() // (out.shape[0] * weight.shape[0])
                counts[0] += positions * weight.numel()
                counts[1] += positions * int(torch.count_nonzero(weight))
            return out

        def run_node(self, n: fx.Node) -> Any:
            self._node = n
            return super().run_node(n)

    with torch.inference_mode():
        Counter(model).run(sample[:1])
    return counts[0], counts[1]
