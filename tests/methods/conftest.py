"""Fixtures for the method plugin tests: digits splits, a trained teacher and a context factory."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import pytest
from torch import nn

from shrinkflow.core.data import Split, split_data
from shrinkflow.core.datasets import digits
from shrinkflow.core.method import Context
from shrinkflow.core.models import MLP
from shrinkflow.core.training import TrainConfig, fit, seed_everything


@pytest.fixture(scope="session")
def digits_splits() -> tuple[Split, Split, Split]:
    """The default 65/15/20 stratified digits split (1,167 / 270 / 360 samples). Do not modify in place."""
    return split_data(digits(), 0.15, 0.2, seed=0)


@pytest.fixture(scope="session")
def _trained_mlp(digits_splits) -> nn.Module:
    train, _, _ = digits_splits
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=(64,))
    fit(model, train, TrainConfig(epochs=5, lr=1e-2))
    return model.eval()


@pytest.fixture
def trained_mlp(_trained_mlp) -> nn.Module:
    """An MLP(64) trained on digits (about 93% test accuracy); a fresh copy per test."""

    return copy.deepcopy(_trained_mlp)


@pytest.fixture
def make_ctx(digits_splits) -> Callable[..., Context]:
    """``make_ctx(epochs=0, lr=3e-3, teacher=None, train=None)``: a Context whose ``fit`` trains on ``train``."""

    def make(epochs: int = 0, lr: float = 3e-3, teacher: nn.Module | None = None, train: Split | None = None):
        train_split = digits_splits[0] if train is None else train
        val = digits_splits[1]
        cfg = TrainConfig(epochs=epochs, lr=lr)
        return Context(
            train_split, val, fit=partial(fit, train=train_split, cfg=cfg, val=val), teacher=teacher
        )

    return make
