"""What a benchmark table says about the machine it was measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """CPU model, core count and the SIMD extensions that decide int8 speed (VNNI, AVX-512, AVX2)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), ""
    )
    simd = [f for f in ("avx512_vnni", "avx_vnni", "avx512f", "avx2") if f" {f}" in info]
    return f"{name or platform.machine()} x{os.cpu_count()} ({', '.join(simd) or 'no AVX2'})"
