"""Canonical Huffman coding: exact round trips, near-entropy sizes, capped code lengths."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkflow.core import huffman


@pytest.mark.parametrize("alphabet", [1, 2, 33, 4096])
def test_round_trip_is_exact(alphabet: int):
    rng = np.random.default_rng(alphabet)
    symbols = rng.integers(0, alphabet, 5000)
    data = huffman.encode(symbols, alphabet)
    assert np.array_equal(huffman.decode(data, len(symbols), alphabet), symbols)


def test_skewed_stream_codes_close_to_its_entropy():
    rng = np.random.default_rng(0)
    p = np.array([0.7, 0.1, 0.1, 0.05, 0.05])
    symbols = rng.choice(5, 20_000, p=p)
    counts = np.bincount(symbols, minlength=5) / len(symbols)
    entropy_bits = -(counts * np.log2(counts)).sum() * len(symbols)
    coded_bits = 8 * (len(huffman.encode(symbols, 5)) - 5)  # minus the code-length table
    # the optimal code here has lengths (1, 3, 3, 3, 3): 1.6 bits/symbol against an entropy of 1.46
    assert entropy_bits <= coded_bits <= 1.6 * len(symbols) * 1.01 + 8
    assert coded_bits < 0.55 * 3 * len(symbols)  # fixed-width coding would need 3 bits per symbol


def test_a_single_symbol_costs_one_bit_each():
    data = huffman.encode(np.full(800, 3), 4)
    assert len(data) == 4 + 100
    assert np.array_equal(huffman.decode(data, 800, 4), np.full(800, 3))


def test_code_lengths_are_capped_for_exponential_counts():
    counts = np.array([2**i for i in range(40)], dtype=np.int64)  # unbounded Huffman would need 39 bits
    lengths = huffman.code_lengths(counts)
    assert lengths.max() <= huffman.MAX_BITS
    assert (2.0 ** -lengths.astype(float)).sum() <= 1.0  # still a prefix code (Kraft)
    symbols = np.repeat(np.arange(40), np.minimum(counts, 50))
    assert np.array_equal(huffman.decode(huffman.encode(symbols, 40), len(symbols), 40), symbols)
