"""Canonical Huffman coding of small-alphabet integer streams (numpy-vectorised encoding).

Deep Compression's third step entropy-codes the sparse-index and codebook-index streams with Huffman
codes. Written by hand because no well-kept Python library codes arbitrary integer alphabets to a
bit-exact, byte-countable stream (zlib/zstd/lzma are byte-oriented LZ coders: they cannot code 5-bit
symbols without padding each to a byte, and their container overhead would blur the measured size).

A coded stream is: code lengths for symbols 0..A-1 (one byte each) and the bit-packed codes. Code
lengths are capped at ``MAX_BITS`` so decoding uses a single lookup table.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["MAX_BITS", "code_lengths", "decode", "encode"]

MAX_BITS = 16


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (0 for unused symbols), capped at MAX_BITS."""
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    weights = counts[used].copy()
    while True:
        heap = [(int(w), i, [i]) for i, w in enumerate(weights)]
        heapq.heapify(heap)
        depth = np.zeros(len(used), dtype=np.int64)
        tie = len(heap)
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            depth[s1] += 1
            depth[s2] += 1
            heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
            tie += 1
        if depth.max() <= MAX_BITS:
            lengths[used] = depth
            return lengths
        weights = weights // 2 + 1  # flatten the distribution until the longest code fits


def _canonical(lengths: np.ndarray) -> np.ndarray:
    """Canonical code values for the given lengths (symbols ordered by (length, symbol))."""
    codes = np.zeros(len(lengths), dtype=np.int64)
    code, prev = 0, 0
    for sym in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
        code <<= int(lengths[sym]) - prev
        prev = int(lengths[sym])
        codes[sym] = code
        code += 1
    return codes


def encode(symbols: np.ndarray, alphabet: int) -> bytes:
    """Huffman-code ``symbols`` (ints in [0, alphabet)); the result carries its own code table."""
    symbols = np.asarray(symbols, dtype=np.int64)
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet))
    codes = _canonical(lengths)
    sym_len, sym_code = lengths[symbols], codes[symbols]
    # Spread each code into its bits, most significant first, then pack all bits at once.
    width = int(sym_len.max()) if len(symbols) else 0
    shifts = np.arange(width - 1, -1, -1)
    bits = (sym_code[:, None] >> shifts[None, :]) & 1
    valid = shifts[None, :] < sym_len[:, None]
    packed = np.packbits(bits[valid].astype(np.uint8)) if len(symbols) else np.zeros(0, np.uint8)
    return lengths.astype(np.uint8).tobytes() + packed.tobytes()


def decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    """Inverse of :func:`encode` for a stream of ``count`` symbols."""
    lengths = np.frombuffer(data[:alphabet], dtype=np.uint8).astype(np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    codes = _canonical(lengths)
    table_sym = np.zeros(1 << MAX_BITS, dtype=np.int64)
    table_len = np.zeros(1 << MAX_BITS, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        span = MAX_BITS - int(lengths[sym])
        start = int(codes[sym]) << span
        table_sym[start : start + (1 << span)] = sym
        table_len[start : start + (1 << span)] = lengths[sym]
    bits = np.unpackbits(np.frombuffer(data[alphabet:], dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(MAX_BITS, dtype=np.int64)])
    # The MAX_BITS-bit window starting at every bit position, computed once, vectorised.
    windows = np.zeros(len(bits) - MAX_BITS, dtype=np.int64)
    for i in range(MAX_BITS):
        windows = (windows << 1) | bits[i : i + len(windows)]
    sym_at, len_at = table_sym[windows].tolist(), table_len[windows].tolist()
    out, pos = [0] * count, 0
    for i in range(count):
        out[i] = sym_at[pos]
        pos += len_at[pos]
    return np.asarray(out, dtype=np.int64)
