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

import time
from typing import Any

import torch

# the runner, reader and quantizer are the export stage's openvino_int8 runtime's
from shrinkflow.core.openvino import OpenVinoModel, nncf_int8, read_onnx, to_ir_tar, unavailable


def missing() -> str | None:
    """Why the OpenVINO rows cannot run here (a package that does not import), or None."""
    return unavailable()


def ir_bytes(model: Any) -> int:
    """The size of ``model`` as the export stage serves it: OpenVINO IR (.xml + .bin, weights in
    their precision) in one tar."""
    return len(to_ir_tar(model))


def openvino_variants(
    fp32_onnx: bytes, calibration: list[torch.Tensor], threads: int
) -> dict[str, dict[str, Any]]:
    """``OpenVINO fp32`` and ``NNCF PTQ int8 (OpenVINO)`` as peers.py's variants (runner, runtime,
    build seconds)."""
    import openvino as ov

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
