from __future__ import annotations

import pytest

from shrinkflow.core.data import Split
from shrinkflow.core.datasets import digits
from shrinkflow.core.training import seed_everything
from shrinkflow.stages import DataStage, split


@pytest.fixture(scope="session")
def digits_splits() -> tuple[Split, Split, Split]:
    return split(digits(), DataStage(), seed=0)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    seed_everything(0)
