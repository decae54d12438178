"""Data-parallel training: outside torchrun nothing changes; inside, two gloo processes train one
model (a real process group on 127.0.0.1, spawned here) to the same weights on both ranks."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from shrinkflow.core import distributed
from shrinkflow.core.data import Split
from shrinkflow.core.datasets import digits
from shrinkflow.core.models import MLP
from shrinkflow.core.training import TrainConfig, evaluate, fit, seed_everything


def test_a_plain_process_is_rank_0_of_1(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert (distributed.launched(), distributed.init(), distributed.rank(), distributed.world_size()) == (
        False,
        False,
        0,
        1,
    )
    assert distributed.is_main() and distributed.device() == torch.device("cpu")


def test_torchrun_variables_make_a_rank_that_is_not_the_main_one(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched() and not distributed.is_main() and distributed.backend() == "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(rank: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    assert distributed.init(timeout_s=120)
    data = digits().data
    train = Split.of(data.x[:1200], data.y[:1200], 10)
    seed_everything(0)
    model = MLP((1, 8, 8), 10, hidden=[32])
    history = fit(model, train, TrainConfig(epochs=10, batch_size=64, lr=3e-3))
    torch.save({"state": model.state_dict(), "history": [h.loss for h in history]}, f"{out}/rank{rank}.pt")
    distributed.shutdown()


def test_two_gloo_ranks_train_one_model_as_one_process_would(tmp_path):
    mp.spawn(_train, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0]["state"].items():  # DDP keeps the replicas identical
        assert torch.equal(value, ranks[1]["state"][key]), key
    assert ranks[0]["history"] == ranks[1]["history"]  # loss summed over both ranks' shares

    data = digits().data
    held_out = Split.of(data.x[1200:], data.y[1200:], 10)
    seed_everything(0)
    single = MLP((1, 8, 8), 10, hidden=[32])
    fit(single, Split.of(data.x[:1200], data.y[:1200], 10), TrainConfig(epochs=10, batch_size=64, lr=3e-3))
    together = MLP((1, 8, 8), 10, hidden=[32])
    together.load_state_dict(ranks[0]["state"])
    # the same global batch and schedule: the same accuracy within noise (597 held-out images)
    assert evaluate(together, held_out)[0] == pytest.approx(evaluate(single, held_out)[0], abs=0.03)
    assert evaluate(together, held_out)[0] > 0.85
