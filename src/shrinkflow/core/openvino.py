"""OpenVINO serving: NNCF post-training int8 of the float ONNX export, run by OpenVINO's CPU plugin.

Optional (the ``[openvino]`` extra); nothing here imports ``openvino`` or ``nncf`` until it is used,
and :func:`unavailable` says why it cannot run where they are missing. It is the ``openvino_int8``
serving runtime of :mod:`shrinkflow.core.deploy`, measured like the others: on convolutional models
at large batches it was the fastest int8 path on an AVX2 CPU (seed CNN at batch 256: 4.49x fp32
eager PyTorch against 3.74x for ONNX Runtime fp32, ``benchmarks/results/peers.md``), and on small
Linear models the slowest.

Why NNCF quantizes the OpenVINO model (``ov.Model`` read from the ONNX export) rather than the torch
model or the ONNX file: OpenVINO is the backend NNCF documents as its main target; there NNCF
places its FakeQuantize nodes on OpenVINO's own graph with the CPU plugin's fusion patterns, so the
CPU plugin runs them as int8 kernels.

The served file (``.ovir``) is an uncompressed tar of the OpenVINO IR (``model.xml`` + ``model.bin``):
one file, portable across machines and OpenVINO versions that read IR (a compiled blob is not).
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["OpenVinoModel", "from_ir_tar", "nncf_int8", "read_onnx", "to_ir_tar", "unavailable"]

_IR = ("model.xml", "model.bin")


def unavailable() -> str | None:
    """Why OpenVINO serving cannot run here (a package that does not import), or None."""
    for name in ("openvino", "nncf"):
        try:
            __import__(name)
        except ImportError as exc:  # not installed, or a broken binary wheel
            return f"{name} does not import ({exc}); pip install 'shrinkflow[openvino]'"
    return None


def _dynamic_batch(model: Any) -> Any:
    (port,) = model.inputs
    shape = port.get_partial_shape()
    shape[0] = -1  # one compiled model serves batch 1 and batch 256
    model.reshape({port.get_any_name(): shape})
    return model


def read_onnx(data: bytes) -> Any:
    """An ONNX file (bytes) as an ``openvino.Model`` whose batch axis is dynamic."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        model = ov.Core().read_model(str(path))  # read eagerly: the file goes with the folder
    return _dynamic_batch(model)


def to_ir_tar(model: Any) -> bytes:
    """``model`` as OpenVINO IR (weights kept in their precision), both files in one tar."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, str(Path(tmp) / _IR[0]), compress_to_fp16=False)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for name in _IR:
                tar.add(Path(tmp) / name, arcname=name)
    return out.getvalue()


def from_ir_tar(data: bytes) -> Any:
    """The ``openvino.Model`` of :func:`to_ir_tar`'s bytes."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        names = sorted(tar.getnames())
        if names != sorted(_IR):
            raise ValueError(f"an OpenVINO IR tar holds {list(_IR)}; this one holds {names}")
        tar.extractall(tmp, filter="data")
        return _dynamic_batch(ov.Core().read_model(str(Path(tmp) / _IR[0])))


def nncf_int8(fp32: Any, calibration: Iterable[torch.Tensor]) -> Any:
    """``nncf.quantize`` of an fp32 ``openvino.Model`` (NNCF's defaults: the PERFORMANCE preset,
    symmetric int8, fast bias correction, CPU target) calibrated on every batch of ``calibration``."""
    import nncf

    nncf.set_log_level(40)  # errors only: NNCF logs progress bars and statistics otherwise
    batches = [b.float().numpy() for b in calibration]
    return nncf.quantize(
        fp32,
        nncf.Dataset(batches),
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(batches),  # counted in dataset items (here batches): take them all
    )


class OpenVinoModel:
    """An OpenVINO CPU model called like a model: a float tensor in, a logits tensor out.

    Compiled for ``threads`` inference threads in one stream with the LATENCY hint, fp32 where not
    quantized, and no thread pinning: the settings ONNX Runtime runs under in
    ``shrinkflow.core.export.OnnxModel``. One infer request per input shape and thread, whose input
    and output tensors OpenVINO allocates once: a call copies the input in and the logits out
    (``CompiledModel.__call__`` builds a result dictionary per call: 136 us vs 85 us at batch 1 on
    LeNet-300-100). Tensors wrapping numpy memory were slower at batch 1 and, with several requests
    alive, crashed the process once (heap corruption): no numpy memory is lent to OpenVINO."""

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
        np.copyto(source, x.contiguous().numpy())
        request.infer()
        return torch.from_numpy(logits.copy())  # the buffer is reused by the next call

    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
