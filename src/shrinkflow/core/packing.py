"""The packed model format: a compressed model stored the way Deep Compression counts it.

A packed file holds the same artifact as :mod:`shrinkflow.core.artifact` (spec, recipe, tensors) and
reloads to identical predictions, but each tensor is stored in the smallest of three lossless forms:

* ``raw``: the tensor's bytes;
* ``codebook``: the tensor's distinct values once, then one codebook index per element,
  Huffman-coded (weight sharing leaves at most 2**bits distinct values per layer);
* ``sparse``: non-zero positions as *relative* indices of a fixed width (the number of zeros skipped
  since the previous entry; a gap wider than the width is bridged with a filler zero, Han et al.
  Fig. 2), Huffman-coded, plus the values as Huffman-coded codebook indices or raw bytes.

The relative-index width is chosen per tensor by trying 1..12 bits and keeping the smallest coded
size (the paper fixed 8 bits for conv and 5 for fc layers). Entropy coding is Huffman
(:mod:`shrinkflow.core.huffman`). Values are handled as their bit patterns, so every dtype (fp32,
fp16, bf16, int8 of quantized tensors) round-trips bit-exactly, except that -0.0 is stored as
+0.0 (masking a negative weight leaves -0.0; the two compare equal and give the same predictions).

Layout: ``MAGIC``, a 4-byte little-endian header length, a zlib-compressed UTF-8 JSON header
(artifact metadata and one entry per tensor with its encoding, shape, dtype and byte ranges), then
the concatenated blobs.
Before encoding, a tensor is narrowed to a smaller dtype when that is lossless (its ``stored``
dtype): torch keeps per-channel weight scales as float64 and zero points as int64, whose values
fit float32 and int8; the header keeps the original dtype, restored on reading.
Reading parses JSON and numbers only: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrinkflow.core import huffman
from shrinkflow.core.artifact import ArtifactError, ModelArtifact, atomic_write, from_payload

__all__ = ["MAGIC", "describe", "from_bytes", "load", "save", "to_bytes"]

MAGIC = b"SFPACK3\n"
_READABLE = (MAGIC, b"SFPACK2\n")  # version 2 had no narrowed tensors; it reads the same way
MAX_INDEX_BITS = 12
MAX_CODEBOOK = 1 << 16

# dtype -> the integer dtype of the same width whose values are its bit patterns
_BITS = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.int64: torch.int64,
    torch.int32: torch.int32,
    torch.int16: torch.int16,
    torch.int8: torch.int8,
    torch.uint8: torch.uint8,
    torch.bool: torch.uint8,
}
_DTYPES = {str(d).removeprefix("torch."): d for d in [*_BITS, torch.qint8, torch.quint8, torch.qint32]}


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.offset = 0

    def add(self, data: bytes) -> list[int]:
        self.parts.append(data)
        self.offset += len(data)
        return [self.offset - len(data), len(data)]


# dtype -> smaller dtypes tried in order; the first that holds every value exactly is stored
_NARROWER = {torch.float64: (torch.float32,), torch.int64: (torch.int8, torch.int16, torch.int32)}


def _narrow(t: torch.Tensor) -> torch.Tensor:
    for dtype in _NARROWER.get(t.dtype, ()):
        narrow = t.to(dtype)
        if torch.equal(narrow.to(t.dtype), t):  # NaN never compares equal: such tensors stay wide
            return narrow
    return t


def _pattern(t: torch.Tensor) -> np.ndarray:
    """The tensor's elements as integers with the same bits (flat, C order)."""
    t = t.detach().contiguous().cpu()
    if t.is_floating_point():
        # -0.0 (what masking a negative weight leaves) is stored as +0.0: equal values, one pattern
        t = torch.where(t == 0, torch.zeros((), dtype=t.dtype), t)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return t.view(_BITS[t.dtype]).reshape(-1).numpy()


def _encode_sparse(flat: np.ndarray, index_bits: int, codebook: np.ndarray | None) -> dict[str, Any]:
    """Relative-index entries for the non-zeros of ``flat`` at one index width."""
    nz = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    span = 1 << index_bits
    fillers = gaps // span
    rest = gaps - fillers * span
    counts = fillers + 1
    owner = np.repeat(np.arange(len(nz)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    is_real = (np.arange(counts.sum()) - first) == fillers[owner]
    skips = np.where(is_real, rest[owner], span - 1)
    entry: dict[str, Any] = {"entries": int(counts.sum()), "index_bits": index_bits}
    entry["_skips"] = huffman.encode(skips, span)
    if codebook is not None:  # symbol 0 is the filler zero, 1.. the codebook values
        symbols = np.where(is_real, np.searchsorted(codebook, flat[nz])[owner] + 1, 0)
        entry["_values"] = huffman.encode(symbols, len(codebook) + 1)
    else:
        values = np.where(is_real, flat[nz][owner], 0).astype(flat.dtype)
        entry["_values"] = values.tobytes()
    return entry


def _encode_tensor(t: torch.Tensor, out: _Writer) -> dict[str, Any]:
    stored = _narrow(t.detach())
    flat = _pattern(stored)
    meta: dict[str, Any] = {
        "t": "tensor",
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
    }
    if stored.dtype != t.dtype:
        meta["stored"] = str(stored.dtype).removeprefix("torch.")
    candidates: list[tuple[int, dict[str, Any], list[bytes]]] = [
        (flat.nbytes, {"enc": "raw"}, [flat.tobytes()])
    ]
    n = flat.size
    if n >= 16:
        codebook, symbols = np.unique(flat, return_inverse=True)
        if len(codebook) <= MAX_CODEBOOK and len(codebook) < n // 2:
            coded = huffman.encode(symbols.ravel(), len(codebook))
            blobs = [codebook.tobytes(), coded]
            candidates.append((sum(map(len, blobs)), {"enc": "codebook", "codebook": len(codebook)}, blobs))
        zeros = n - int(np.count_nonzero(flat))
        if n // 4 < zeros < n:  # an all-zero tensor has no entries to index (codebook codes it)
            nonzero_book = np.unique(flat[flat != 0])
            shared = (
                nonzero_book
                if len(nonzero_book) <= MAX_CODEBOOK and len(nonzero_book) < (n - zeros) // 2
                else None
            )
            for bits in range(1, MAX_INDEX_BITS + 1):
                entry = _encode_sparse(flat, bits, shared)
                blobs = ([shared.tobytes()] if shared is not None else []) + [
                    entry.pop("_skips"),
                    entry.pop("_values"),
                ]
                info = {"enc": "sparse", "codebook": None if shared is None else len(shared), **entry}
                candidates.append((sum(map(len, blobs)), info, blobs))
    _, info, blobs = min(candidates, key=lambda c: c[0])
    meta.update(info, blobs=[out.add(b) for b in blobs])
    return meta


def _decode_tensor(meta: dict[str, Any], blob: memoryview) -> torch.Tensor:
    dtype = _DTYPES[meta.get("stored", meta["dtype"])]
    pattern = _BITS[dtype]
    np_dtype = torch.empty(0, dtype=pattern).numpy().dtype
    n = int(np.prod(meta["shape"])) if meta["shape"] else 1
    parts = [bytes(blob[o : o + size]) for o, size in meta["blobs"]]
    if meta["enc"] == "raw":
        flat = np.frombuffer(parts[0], dtype=np_dtype).copy()
    elif meta["enc"] == "codebook":
        codebook = np.frombuffer(parts[0], dtype=np_dtype)
        flat = codebook[huffman.decode(parts[1], n, meta["codebook"])]
    elif meta["enc"] == "sparse":
        span = 1 << meta["index_bits"]
        if meta["codebook"] is not None:
            codebook = np.concatenate([np.zeros(1, np_dtype), np.frombuffer(parts[0], dtype=np_dtype)])
            skips_blob, values_blob = parts[1], parts[2]
        else:
            codebook, (skips_blob, values_blob) = None, parts
        entries = meta["entries"]
        skips = huffman.decode(skips_blob, entries, span)
        if codebook is not None:
            values = codebook[huffman.decode(values_blob, entries, meta["codebook"] + 1)]
        else:
            values = np.frombuffer(values_blob, dtype=np_dtype)
        flat = np.zeros(n, dtype=np_dtype)
        flat[np.cumsum(skips + 1) - 1] = values
    else:
        raise ArtifactError(
            f"packed tensor has unknown encoding {meta['enc']!r}; expected raw, codebook or sparse"
        )
    t = torch.from_numpy(np.ascontiguousarray(flat)).view(dtype)
    return t.reshape(meta["shape"]).to(_DTYPES[meta["dtype"]])


def _encode(value: Any, out: _Writer) -> dict[str, Any]:
    if isinstance(value, torch.Tensor) and value.is_quantized:
        node: dict[str, Any] = {"t": "qtensor", "dtype": str(value.dtype).removeprefix("torch.")}
        node["values"] = _encode_tensor(value.int_repr(), out)
        if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            node.update(scheme="tensor", scale=float(value.q_scale()), zero_point=int(value.q_zero_point()))
        else:
            node.update(
                scheme="channel",
                axis=int(value.q_per_channel_axis()),
                scales=_encode_tensor(value.q_per_channel_scales(), out),
                zero_points=_encode_tensor(value.q_per_channel_zero_points(), out),
            )
        return node
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value, out)
    if isinstance(value, (tuple, list)):
        return {"t": type(value).__name__, "items": [_encode(v, out) for v in value]}
    if isinstance(value, torch.dtype):
        return {"t": "dtype", "v": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"t": "json", "v": value}
    raise ArtifactError(f"cannot pack a state_dict value of type {type(value).__name__}")


def _decode(node: dict[str, Any], blob: memoryview) -> Any:
    kind = node["t"]
    if kind == "tensor":
        return _decode_tensor(node, blob)
    if kind == "qtensor":
        values = _decode_tensor(node["values"], blob)
        dtype = _DTYPES[node["dtype"]]
        if node["scheme"] == "tensor":
            return torch._make_per_tensor_quantized_tensor(values, node["scale"], node["zero_point"])
        scales = _decode_tensor(node["scales"], blob)
        zero_points = _decode_tensor(node["zero_points"], blob)
        q = torch._make_per_channel_quantized_tensor(values, scales, zero_points, node["axis"])
        assert q.dtype == dtype
        return q
    if kind in ("tuple", "list"):
        items = [_decode(v, blob) for v in node["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dtype":
        return _DTYPES[node["v"]]
    return node["v"]


def to_bytes(artifact: ModelArtifact) -> bytes:
    """The packed bytes of ``artifact`` (what :func:`save` writes)."""
    payload = artifact.payload()
    state = payload.pop("state_dict")
    out = _Writer()
    tensors = {name: _encode(value, out) for name, value in state.items()}
    header = {
        "format": "shrinkflow.packed",
        "artifact": payload,
        "metadata": {k: dict(v) for k, v in getattr(state, "_metadata", {}).items()},
        "tensors": tensors,
    }
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(out.parts)


def _header(data: bytes, source: str) -> tuple[dict[str, Any], memoryview]:
    """The decoded JSON header and the blob area that follows it."""
    if not data.startswith(_READABLE) or len(data) < len(MAGIC) + 4:
        raise ArtifactError(f"{source!r} is not a packed shrinkflow model (no {MAGIC!r} header)")
    (size,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    try:
        header = json.loads(zlib.decompress(data[start : start + size]))
    except (ValueError, zlib.error) as exc:
        raise ArtifactError(f"packed model {source!r} is corrupt: {type(exc).__name__}: {exc}") from exc
    return header, memoryview(data)[start + size :]


def from_bytes(data: bytes, source: str = "<bytes>") -> ModelArtifact:
    """Rebuild the artifact from packed bytes (JSON and numbers only, nothing unpickled)."""
    header, blob = _header(data, source)
    try:
        state: OrderedDict[str, Any] = OrderedDict(
            (name, _decode(node, blob)) for name, node in header["tensors"].items()
        )
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ArtifactError(f"packed model {source!r} is corrupt: {type(exc).__name__}: {exc}") from exc
    state._metadata = OrderedDict((k, v) for k, v in header["metadata"].items())  # type: ignore[attr-defined]
    return from_payload({**header["artifact"], "state_dict": state}, source)


def save(artifact: ModelArtifact, path: str | os.PathLike[str]) -> int:
    """Write the packed form atomically; returns its size in bytes."""
    data = to_bytes(artifact)
    atomic_write(Path(path), data)
    return len(data)


def load(path: str | os.PathLike[str]) -> ModelArtifact:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"packed model {str(path)!r} does not exist")
    return from_bytes(path.read_bytes(), str(path))


def describe(data: bytes) -> dict[str, dict[str, Any]]:
    """Per-tensor encoding facts of a packed model: encoding, elements, non-zeros, stored bytes, bits."""
    header, _ = _header(data, "<bytes>")
    rows = {}
    for name, node in header["tensors"].items():
        meta = node.get("values", node) if node["t"] in ("tensor", "qtensor") else None
        if meta is None:
            continue
        n = int(np.prod(meta["shape"])) if meta["shape"] else 1
        stored = sum(size for _, size in meta["blobs"])
        rows[name] = {
            "encoding": meta["enc"],
            "elements": n,
            "codebook": meta.get("codebook"),
            "index_bits": meta.get("index_bits"),
            "entries": meta.get("entries"),
            "stored_bytes": stored,
            "bits_per_element": 8 * stored / n if n else 0.0,
        }
    return rows
