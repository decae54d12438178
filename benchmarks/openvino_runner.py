"""OpenVINO peers for benchmarks/peers.py: NNCF post-training int8 and OpenVINO fp32.

Optional (not a dependency of shrinkflow, whose code and tests never import either package):

    pip install -c constraints.txt -e ".[openvino]"

Both variants start from the same fp32 ONNX export that the ONNX Runtime rows run, so the
``OpenVINO fp32`` row differs from ``ONNX Runtime fp32`` in the runtime only, and ``NNCF PTQ int8
(OpenVINO)`` from ``OpenVINO fp32`` in the quantization only.

Why NNCF quantizes the OpenVINO model (``ov.Model`` read from the ONNX export) rather than the
torch model or the ONNX file: the OpenVINO backend is the one NNCF documents as its main target
("we aim for best results on OpenVINO runtime", docs/FAQ.md; its PTQ examples convert to
``ov.Model`` first, then call ``nncf.quantize``). There NNCF places its FakeQuantize nodes on
OpenVINO's own graph with the CPU plugin's fusion patterns, so OpenVINO's CPU plugin runs them as
int8 kernels; the torch backend inserts torch fake-quantizers that must be converted again, and
the ONNX backend writes QDQ pairs tuned for ONNX Runtime.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch


def missing() -> str | None:
    """Why the OpenVINO rows cannot run here (a package that does not import), or None."""
    for name in ("openvino", "nncf"):
        try:
            __import__(name)
        except ImportError as exc:  # not installed, or a broken binary wheel
            return f"{name}: {exc}"
    return None


def read_onnx(data: bytes) -> Any:
    """An ONNX file (bytes) as an ``openvino.Model`` whose batch axis is dynamic."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        model = ov.Core().read_model(str(path))  # read eagerly: the file goes with the folder
    (port,) = model.inputs
    shape = port.get_partial_shape()
    shape[0] = -1  # a dynamic batch: one compiled model serves batch 1 and batch 256
    model.reshape({port.get_any_name(): shape})
    return model


def ir_bytes(model: Any) -> int:
    """The size of ``model`` saved as OpenVINO IR (.xml + .bin), weights kept in their precision."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        return sum(f.stat().st_size for f in Path(tmp).iterdir())


def nncf_int8(fp32: Any, calibration: Iterable[torch.Tensor]) -> Any:
    """``nncf.quantize`` of an fp32 ``openvino.Model`` (NNCF's defaults: the PERFORMANCE preset,
    symmetric int8, fast bias correction, CPU target) calibrated on every batch of ``calibration``."""
    import nncf

    batches = [b.float().numpy() for b in calibration]
    return nncf.quantize(
        fp32,
        nncf.Dataset(batches),
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(batches),  # counted in dataset items (here batches): take them all
    )


class OpenVinoModel:
    """An OpenVINO CPU model called like a model: a float tensor in, a logits tensor out.

    Compiled for ``threads`` inference threads in one stream with the LATENCY hint, fp32 where
    not quantized, and no thread pinning: the settings ONNX Runtime runs under in
    ``shrinkflow.core.export.OnnxModel`` (``threads`` intra-op threads, sequential, no spinning),
    used for batch 1 and batch 256 alike. One infer request per input shape and thread, whose input
    and output tensors OpenVINO allocates once: a call copies the input in and the logits out
    (``CompiledModel.__call__`` builds a result dictionary per call: 136 us vs 85 us at batch 1 on
    LeNet-300-100 here). Tensors wrapping numpy memory (``shared_memory=True``) were slower at
    batch 1 (131 us) and, with several requests alive, crashed the process once ("corrupted
    double-linked list"): no numpy memory is lent to OpenVINO here."""

    def __init__(self, model: Any, threads: int = 1) -> None:
        import openvino as ov

        self._ov = ov
        self.compiled = ov.Core().compile_model(
            model,
            "CPU",
            {
                "INFERENCE_NUM_THREADS": threads,
                "NUM_STREAMS": 1,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_PRECISION_HINT": "f32",  # no bf16/f16 fallback on CPUs that have them
                "ENABLE_CPU_PINNING": False,
            },
        )
        self._local = threading.local()

    def _request(self, shape: tuple[int, ...]) -> tuple[Any, np.ndarray, np.ndarray]:
        cache = self._local.__dict__.setdefault("requests", {})
        bound = cache.get(shape)
        if bound is None:
            if len(cache) >= 8:  # predict()'s ragged last batch, evaluation sizes, ...
                cache.clear()
            ov = self._ov
            request = self.compiled.create_infer_request()
            source = ov.Tensor(ov.Type.f32, ov.Shape(list(shape)))
            request.set_input_tensor(0, source)
            request.infer()  # learns the output shape
            logits = ov.Tensor(ov.Type.f32, request.get_output_tensor(0).get_shape())
            request.set_output_tensor(0, logits)
            # the tensors stay referenced beside their numpy views
            bound = cache[shape] = (request, source.data, logits.data, source, logits)
        return bound[:3]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or x.requires_grad:
            x = x.detach().float()
        request, source, logits = self._request(tuple(x.shape))
        np.copyto(source, x.numpy())
        request.infer()
        return torch.from_numpy(logits.copy())  # the buffer is reused by the next call

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


def openvino_variants(
    fp32_onnx: bytes, calibration: list[torch.Tensor], threads: int
) -> dict[str, dict[str, Any]]:
    """``OpenVINO fp32`` and ``NNCF PTQ int8 (OpenVINO)`` as peers.py's variants (runner, runtime,
    build seconds)."""
    import nncf
    import openvino as ov

    nncf.set_log_level(40)  # errors only: NNCF logs progress bars and statistics otherwise
    start = time.perf_counter()
    fp32 = read_onnx(fp32_onnx)
    out: dict[str, dict[str, Any]] = {
        "OpenVINO fp32": {
            "runner": OpenVinoModel(fp32, threads),
            "build_seconds": time.perf_counter() - start,
        }
    }
    start = time.perf_counter()
    int8 = nncf_int8(fp32, calibration)
    out["NNCF PTQ int8 (OpenVINO)"] = {
        "runner": OpenVinoModel(int8, threads),
        "build_seconds": time.perf_counter() - start,
    }
    for v, model in zip(out.values(), (fp32, int8), strict=True):
        v["runtime"] = f"OpenVINO {ov.__version__.split('-')[0]}"
        v["ir_bytes"] = ir_bytes(model)
        v["agrees_with"] = "fp32 eager"
    return out
