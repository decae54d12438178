"""Fixtures for the core library tests: scikit-learn's digits (embedded, no download)."""

from __future__ import annotations

import pytest

from shrinkflow.core.data import RawData, Split, split_data
from shrinkflow.core.datasets import digits


@pytest.fixture(scope="session")
def digits_raw() -> RawData:
    """The 1,797 digits. Shared across the session: tests must not modify its tensors in place."""
    return digits()


@pytest.fixture(scope="session")
def digits_splits(digits_raw: RawData) -> tuple[Split, Split, Split]:
    """The default 65/15/20 stratified split (1,167 / 270 / 360 samples)."""
    return split_data(digits_raw, 0.15, 0.2, seed=0)
