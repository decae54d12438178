"""The final model as ONNX, int8 QDQ where it is quantized, served by ONNX Runtime.

* Float models are exported with torch's dynamo exporter (``torch.onnx.export(dynamo=True)``,
  opset 18, a dynamic batch axis, one self-contained file).
* *Static* int8 models (``static_int8``, ``qat``: torch FX graphs of ``quantize_per_tensor`` and
  quantized Linear/Conv modules) are exported as they are, by torch's TorchScript exporter
  (``dynamo=False``), whose ONNX symbolics turn each quantized op into QuantizeLinear /
  DequantizeLinear around the float op, carrying torch's own int8 weights, per-channel weight
  scales and activation scales and zero points. ONNX Runtime fuses them back into int8 kernels
  (QGemm, QLinearConv): the same integer arithmetic as the PyTorch model, so the two agree on
  essentially every prediction (LeNet-300-100 on MNIST: 10,000 of 10,000). The dynamo exporter
  rejects quantized tensors, so the older exporter is the one that can do this; if it fails on some
  op, the export falls back to recalibration below (``qparams: calibrated``) with a warning.
* *PT2E* int8 graphs (``static_int8``/``qat`` with ``backend: pt2e``, the default) are float ops
  between ``quantize``/``dequantize`` calls; the dynamo exporter writes them as QuantizeLinear /
  DequantizeLinear with the graph's own int8 weights and scales (``qparams: torch``), which ONNX
  Runtime fuses into QLinearConv/QGemm/QLinearAdd. Both compute the same integer values up to the
  rounding of requantization (float in PyTorch, fixed point in ONNX Runtime's kernels).
* ``torch.ao`` *dynamic* int8 models cannot be exported by either torch exporter (no ONNX symbolic
  for ``quantized::linear_dynamic``). They are exported as their *float twin* (the same
  architecture, holding exactly the dequantized int8 weights) and quantized again by ONNX
  Runtime's ``quantize_static`` into QDQ, with activation ranges calibrated on training batches.
  That is static quantization of a model whose PyTorch form picks its activation ranges per batch,
  so the two disagree on near-ties (about 0.1-0.2% of MNIST test images). Defaults for that path,
  measured on a 2-core AVX2 CPU without VNNI (``benchmarks/peers.py``): uint8 activations x int8
  weights is MLAS's fast path there, and ``reduce_range`` (7-bit weights) avoids the int16
  saturation of AVX2's ``vpmaddubsw`` that made full-range per-channel weights disagree with the
  PyTorch model on 0.4% of test images (0.07% with it) -- the reason torch's x86 engine reduces its
  activation range, which the torch-qparams path inherits.

ORT is used for int8 serving because it is the fastest int8 path measured here (about 2x fp32
eager PyTorch at batch 256, against 1.5-1.6x for ``torch.ao`` int8 kernels) and the format every
serving stack reads.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core.artifact import ModelArtifact, rebuild
from shrinkflow.core.config import Config, ConfigError, check_choice, check_range
from shrinkflow.core.models import build_model
from shrinkflow.core.ortquant import _as_input, _quiet, quantize_dynamic_int8, quantize_int8
from shrinkflow.core.qgraph import graph_layers, is_int8_graph
from shrinkflow.core.sparsity import weight_tensors
from shrinkflow.core.textmodels import takes_tokens

__all__ = [
    "ExportConfig",
    "ExportError",
    "Exported",
    "OnnxModel",
    "export_artifact",
    "float_twin",
    "int8_modules",
    "is_static_int8",
    "onnx_op_types",
    "quantize_int8",
    "to_onnx",
    "torch_qdq",
]

FORMATS = ("auto", "float", "int8", "eager", "sparse_csr")
ACTIVATIONS = ("uint8", "int8")
_INT8_PACKAGES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")
_DYNAMIC_PACKAGES = ("torch.ao.nn.quantized.dynamic", "torch.ao.nn.intrinsic.quantized.dynamic")
log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The model cannot be exported, or ONNX Runtime cannot run the export."""


@dataclass
class ExportConfig(Config):
    """``format``: ``auto`` serves the model on the runtime measured fastest at ``serve_batch``
    among ``runtimes`` whose predictions agree with the model on at least ``min_agreement`` of the
    validation inputs (:mod:`shrinkflow.core.deploy`; every runtime is timed at each of
    ``batch_sizes`` in ``rounds`` interleaved rounds); ``float``/``int8`` force ONNX Runtime fp32 /
    int8 QDQ, ``eager``/``sparse_csr`` force PyTorch. ``sparse_min_sparsity``: the least share of
    zeros that makes a Linear layer sparse in ``sparse_csr``.
    The int8 fields apply where ONNX Runtime calibrates the int8 graph itself (dynamic int8
    models, and int8 export of a float model); static int8 models keep their own qparams:
    ``calibration_batches`` x ``batch_size`` training samples fix the activation ranges,
    ``per_channel``/``reduce_range`` shape the int8 weights, ``activation`` their type;
    ``int8_activations``: ``static`` (QDQ, calibrated ranges), ``dynamic`` (per-batch scales,
    :mod:`shrinkflow.core.ortquant`) or ``auto``: dynamic for models reading token ids, static
    otherwise."""

    format: str = "auto"
    opset: int = 18
    per_channel: bool = True
    reduce_range: bool = True
    activation: str = "uint8"
    int8_activations: str = "auto"
    calibration_batches: int = 8
    batch_size: int = 128
    runtimes: list[str] = field(
        default_factory=lambda: ["eager", "sparse_csr", "onnx_fp32", "onnx_int8", "openvino_int8"]
    )
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])
    serve_batch: int = 1
    min_agreement: float = 0.999
    rounds: int = 5
    sparse_min_sparsity: float = 0.5

    def __post_init__(self) -> None:
        check_choice("format", self.format, FORMATS)
        if not isinstance(self.runtimes, list) or not self.runtimes:
            raise ConfigError(
                "runtimes", self.runtimes, f"a non-empty list from {plugins.available(plugins.RUNTIMES)}"
            )
        for i, name in enumerate(self.runtimes):
            check_choice(f"runtimes[{i}]", name, plugins.available(plugins.RUNTIMES))
        if not isinstance(self.batch_sizes, list) or not self.batch_sizes:
            raise ConfigError(
                "batch_sizes", self.batch_sizes, "a non-empty list of batch sizes, e.g. [1, 256]"
            )
        for i, size in enumerate(self.batch_sizes):
            check_range(f"batch_sizes[{i}]", size, 1, 1_000_000, integer=True)
        if self.serve_batch not in self.batch_sizes:
            raise ConfigError("serve_batch", self.serve_batch, f"one of batch_sizes {self.batch_sizes}")
        check_range("min_agreement", self.min_agreement, 0.0, 1.0)
        check_range("rounds", self.rounds, 1, 1000, integer=True)
        check_range("sparse_min_sparsity", self.sparse_min_sparsity, 0.0, 1.0, high_open=True)
        # the dynamo exporter's op library is built at opset 18; lower opsets go through a converter
        check_range("opset", self.opset, 18, 23, integer=True)
        for key in ("per_channel", "reduce_range"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, getattr(self, key), "true or false")
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("int8_activations", self.int8_activations, ["auto", "static", "dynamic"])
        check_range("calibration_batches", self.calibration_batches, 1, 100_000, integer=True)
        check_range("batch_size", self.batch_size, 1, 1_000_000, integer=True)


class Exported(NamedTuple):
    """An export: the ONNX bytes, ``format`` (``float`` | ``int8``) and where the int8 scales and
    zero points came from (``qparams``: ``torch`` = the PyTorch model's own, ``calibrated`` = ONNX
    Runtime's calibration on training batches, ``dynamic`` = computed per batch at run time,
    ``none`` for float)."""

    data: bytes
    format: str
    qparams: str


def int8_modules(model: nn.Module) -> list[str]:
    """Names of the modules that run ``torch.ao`` int8 kernels (dynamic or static), or of the
    layers of a PT2E int8 graph."""
    if is_int8_graph(model):
        return [name for _, name in graph_layers(model)]  # type: ignore[arg-type]
    return [n for n, m in model.named_modules() if type(m).__module__.startswith(_INT8_PACKAGES)]


def is_static_int8(model: nn.Module) -> bool:
    """A torch FX graph with int8 modules and no dynamic ones (``static_int8``, ``qat``)."""
    modules = int8_modules(model)
    dynamic = [n for n, m in model.named_modules() if type(m).__module__.startswith(_DYNAMIC_PACKAGES)]
    return isinstance(model, torch.fx.GraphModule) and bool(modules) and not dynamic


def float_twin(artifact: ModelArtifact) -> nn.Module:
    """The artifact's architecture without its quantization step, holding the dequantized weights:
    it computes what the int8 model computes, up to activation rounding."""
    twin = rebuild(
        build_model(artifact.spec, artifact.input_shape, artifact.num_classes),
        artifact.recipe,
        skip=(plugins.QUANTIZERS,),
    )
    # float buffers (BatchNorm running statistics, ...) as the int8 model holds them, then every
    # weight and bias dequantized from its int8 module
    values = {
        k: v
        for k, v in artifact.model.state_dict().items()
        if isinstance(v, torch.Tensor) and not v.is_quantized
    }
    values.update(weight_tensors(artifact.model))
    own = twin.state_dict()
    missing = sorted(k for k in own if k not in values or values[k].shape != own[k].shape)
    if missing:
        raise ExportError(
            f"the int8 model's weights do not map onto its float architecture {type(twin).__name__}: "
            f"no tensor of the right shape for {missing[:8]}; expected the quantizer to keep module names"
        )
    twin.load_state_dict({k: values[k].to(own[k].dtype) for k in own})
    return twin.eval()


def to_onnx(model: nn.Module, example: torch.Tensor, opset: int = 18) -> bytes:
    """A float model as one self-contained ONNX file with a dynamic batch axis (and, for token ids,
    a dynamic sequence axis: one file serves any batch size and sentence length)."""
    if example.shape[0] < 2:
        # torch.export specializes size-1 dimensions: a batch-1 example would freeze the batch size
        example = example.expand(2, *example.shape[1:])
    tokens = not example.dtype.is_floating_point and example.ndim == 2
    if tokens and example.shape[1] < 3:  # nor may the sequence axis be 1 (or equal the batch's 2)
        example = torch.cat([example, example[:, -1:].expand(-1, 3 - example.shape[1])], 1)
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(
                model.eval(),
                (_as_input(example[:2]),),
                str(path),
                dynamo=True,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: "batch", 1: "sequence"} if tokens else {0: "batch"},),
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # torch.export raises many types (Unsupported, UserError, ...)
            raise ExportError(
                f"torch.onnx.export (dynamo, opset {opset}) failed for {type(model).__name__}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return _without_debug_info(path.read_bytes())


def _without_debug_info(data: bytes) -> bytes:
    """The export without the exporter's per-node debugging metadata (Python stack traces, FX node
    names, module paths): it is half of an int8 QDQ file (MobileNetV2 0.25: 814 KB -> 437 KB) and
    no runtime reads it."""
    import onnx

    model = onnx.load_from_string(data)
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return model.SerializeToString()


def torch_qdq(model: nn.Module, example: torch.Tensor, opset: int = 18) -> bytes:
    """A static int8 FX model as QDQ ONNX with its own qparams, through torch's TorchScript
    exporter (trace, then the ``quantized::*`` symbolics), a dynamic batch axis, one file."""
    example = (example.expand(2, *example.shape[1:]) if example.shape[0] < 2 else example[:2]).float()
    buffer = io.BytesIO()
    with _quiet():
        try:
            traced = torch.jit.trace(model.eval(), (example,), check_trace=False)
            torch.onnx.export(
                traced,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
        except Exception as exc:  # tracing and the symbolics raise many types
            raise ExportError(
                f"torch.onnx.export (TorchScript, opset {opset}) failed for the int8 {type(model).__name__}: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
    return buffer.getvalue()


def onnx_op_types(model: nn.Module) -> list[str] | None:
    """The ONNX op types to quantize so that the export runs in int8 what ``model`` runs in int8.

    A model whose convolutions stay float (``dynamic_int8`` quantizes Linear layers only) gets
    int8 MatMul/Gemm and float Conv, as in PyTorch; that is also the faster choice on CPUs without
    VNNI, where ONNX Runtime's int8 convolutions measured slower than its fp32 ones (LeNet-5 at
    batch 256: 0.7-1.0x fp32). Otherwise every op ONNX Runtime can quantize (None): activations then
    stay int8 from layer to layer (ReLU, pooling, reshapes), which measured about 5% faster on
    LeNet-300-100 than quantizing the matrix products alone.
    """
    float_convs = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in model.modules())
    return ["MatMul", "Gemm"] if float_convs and int8_modules(model) else None


def export_artifact(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Iterable[torch.Tensor], cfg: ExportConfig
) -> Exported:
    """The artifact as ONNX: ``int8`` QDQ or ``float`` (the weights in their stored float dtype),
    chosen by ``cfg.format``; static int8 models keep their own qparams (see the module doc)."""
    quantized = bool(int8_modules(artifact.model))
    # the ONNX form: int8 for an int8 model unless float is asked (a runtime format: its own rule)
    fmt = cfg.format if cfg.format in ("float", "int8") else ("int8" if quantized else "float")
    if is_int8_graph(artifact.model):
        if fmt == "float":
            raise ExportError("a PT2E int8 graph has no float form to export; use format: auto or int8")
        return Exported(to_onnx(artifact.model, example, cfg.opset), "int8", "torch")
    if fmt == "int8" and is_static_int8(artifact.model):
        try:
            return Exported(torch_qdq(artifact.model, example, cfg.opset), "int8", "torch")
        except ExportError as exc:
            log.warning("%s; exporting the float twin and recalibrating in ONNX Runtime instead", exc)
    model = float_twin(artifact) if quantized else artifact.model
    fp32 = to_onnx(model, example, cfg.opset)
    if fmt == "float":
        return Exported(fp32, "float", "none")
    dynamic = cfg.int8_activations == "dynamic" or (
        cfg.int8_activations == "auto" and takes_tokens(artifact.model, artifact.input_shape)
    )
    if dynamic:
        return Exported(quantize_dynamic_int8(fp32, cfg), "int8", "dynamic")
    op_types = onnx_op_types(artifact.model) if quantized else None
    return Exported(quantize_int8(fp32, calibration, cfg, op_types), "int8", "calibrated")


class OnnxModel:
    """An ONNX Runtime CPU session called like a model: a float (or token-id) tensor in, logits out.

    ``threads`` intra-op threads, one inter-op thread, sequential execution and no spin-waiting
    (spinning threads steal the cores of a busy shared machine and make timings bimodal)."""

    def __init__(self, data: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise ExportError(
                f"ONNX Runtime cannot load the model ({len(data)} bytes): {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.dtype = torch.int64 if self.session.get_inputs()[0].type == "tensor(int64)" else torch.float32
        self._local = threading.local()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype or not x.is_contiguous() or x.requires_grad:
            x = x.detach().to(self.dtype).contiguous()
        array = x.numpy()
        # I/O binding into a preallocated output, one per input shape and thread (ORT's low-latency
        # serving API): ``session.run`` allocates and converts its outputs on every call, about
        # 8 us that dominate a batch-1 call of a small model (a pruned CNN runs in ~30 us).
        cache = self._local.__dict__.setdefault("bindings", {})
        bound = cache.get(array.shape)
        if bound is None:
            logits = self.session.run(None, {self.input_name: array})[0]
            if len(cache) >= 8:  # predict()'s ragged last batch, evaluation sizes, ...
                cache.clear()
            binding, buffer = self.session.io_binding(), np.empty_like(logits)
            binding.bind_output(
                self.output_name, "cpu", 0, buffer.dtype.type, list(buffer.shape), buffer.ctypes.data
            )
            cache[array.shape] = (binding, buffer)
            return torch.from_numpy(logits)
        binding, buffer = bound
        binding.bind_cpu_input(self.input_name, array)
        self.session.run_with_iobinding(binding)
        return torch.from_numpy(buffer.copy())  # the buffer is reused by the next call

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
