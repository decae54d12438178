"""Mini-batches through DataLoader workers: the same batches, in the same order, as in-process
reading; configuration checks."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import Split, TensorSource
from shrinkflow.core.loader import LoaderConfig


def _split(n: int = 50, loader: LoaderConfig | None = None, **kwargs) -> Split:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return Split(TensorSource(x, torch.arange(n) % 3, 3), torch.arange(n), loader=loader, **kwargs)


def _epochs(split: Split, epochs: int = 2) -> list[list[int]]:
    batches = split.batches(8, shuffle=True, generator=torch.Generator().manual_seed(7))
    return [[int(v) for xb, _ in batches for v in xb[:, 0, 0, 0]] for _ in range(epochs)]


def test_the_order_is_the_shuffle_the_training_loop_always_drew():
    gen = torch.Generator().manual_seed(7)
    expected = [torch.randperm(50, generator=gen).tolist() for _ in range(2)]
    assert _epochs(_split()) == expected
    assert expected[0] != expected[1]  # a new order each epoch


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_give_the_same_batches_in_the_same_order(persistent):
    loader = LoaderConfig(num_workers=2, persistent_workers=persistent, prefetch_factor=2)
    assert _epochs(_split(loader=loader)) == _epochs(_split())


def test_batches_keep_their_labels_and_sizes():
    split = _split(loader=LoaderConfig(num_workers=1))
    seen = [(xb, yb) for xb, yb in split.batches(16)]
    assert [len(yb) for _, yb in seen] == [16, 16, 16, 2]
    for xb, yb in seen:
        assert torch.equal(xb[:, 0, 0, 0].long() % 3, yb)


def test_augmented_batches_from_workers_are_reproducible():
    steps = ({"random_crop": {"size": 2, "padding": 1}},)
    loader = LoaderConfig(num_workers=2)
    first, second = (
        [xb for xb, _ in _split(loader=loader, transforms=steps, train=True).batches(8, shuffle=True)]
        for _ in range(2)
    )
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    plain = [xb for xb, _ in _split(transforms=steps, train=False).batches(8, shuffle=True)]
    assert not all(torch.equal(a, b) for a, b in zip(first, plain, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"num_workers": -1}, "num_workers"),
        ({"pin_memory": "yes"}, "pin_memory"),
        ({"persistent_workers": 1}, "persistent_workers"),
        ({"prefetch_factor": 0}, "prefetch_factor"),
    ],
)
def test_bad_loader_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        LoaderConfig(**kwargs)
    assert info.value.key == key
