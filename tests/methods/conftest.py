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


@pytest.fixture(scope="session")
def text_splits(tmp_path_factory) -> tuple[Split, Split, Split]:
    """Token-id splits of a small generated two-class corpus (tests.core.test_text.corpus: 400
    train / 100 dev / 100 test sentences, WordPiece, max_length 16). Do not modify in place."""
    from shrinkflow.core.text import text_tsv
    from tests.core.test_text import corpus, write_tsv

    folder = tmp_path_factory.mktemp("text")
    files = {
        part: str(write_tsv(folder / f"{part}.tsv", corpus(n, seed)))
        for part, n, seed in (("train", 400, 0), ("val", 100, 1), ("test", 100, 2))
    }
    raw = text_tsv(**files, tokenizer={"vocab_size": 200, "max_length": 16})
    return split_data(raw, 0.15, 0.2, seed=0)


@pytest.fixture
def make_text_ctx(text_splits) -> Callable[..., Context]:
    """``make_text_ctx(epochs=0, lr=3e-3, teacher=None)``: a Context training on ``text_splits``."""

    def make(epochs: int = 0, lr: float = 3e-3, teacher: nn.Module | None = None) -> Context:
        train, val, _ = text_splits
        cfg = TrainConfig(epochs=epochs, lr=lr, batch_size=32, optimizer="adamw")
        return Context(train, val, fit=partial(fit, train=train, cfg=cfg, val=val), teacher=teacher)

    return make
