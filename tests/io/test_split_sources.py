"""Split files hold positions and the plugin that rebuilds the source, not the samples."""

from __future__ import annotations

import io

import pytest
import torch
from kedro.io import DatasetError

from shrinkflow.core.data import split_data
from shrinkflow.io import PluginDataset, SplitDataset
from tests.core.test_images import _fashion_mnist, _folder


def test_a_folder_split_is_stored_as_positions_and_reads_back_the_same_batches(tmp_path):
    root = _folder(tmp_path / "photos", per_class=20, size=32)
    raw = PluginDataset("image_folder", {"path": str(root), "channels": 3}).load()
    steps = (
        {"random_crop": {"size": 32, "padding": 4}},
        {"normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}},
    )
    train, val, test = split_data(raw, 0.2, 0.2, seed=0, transforms=steps)
    files = {name: SplitDataset(str(tmp_path / f"{name}.pt")) for name in ("train", "val", "test")}
    for name, split in zip(files, (train, val, test), strict=True):
        files[name].save(split)
    back = {name: ds.load() for name, ds in files.items()}
    assert torch.equal(back["test"].indices, test.indices) and torch.equal(back["test"].y, test.y)
    assert torch.equal(back["test"].x, test.x)  # no augmentation outside training: the same pixels
    assert back["train"].train and not back["val"].train and back["train"].transforms == steps
    # 24 positions and labels, not 24 x 3 x 32 x 32 pixels
    assert (tmp_path / "train.pt").stat().st_size < 3 * 32 * 32


def test_a_changed_folder_is_refused_with_what_to_do(tmp_path):
    root = _folder(tmp_path / "photos", per_class=10)
    raw = PluginDataset("image_folder", {"path": str(root), "channels": 3}).load()
    dataset = SplitDataset(str(tmp_path / "train.pt"))
    dataset.save(split_data(raw, 0.2, 0.2, seed=0)[0])
    (root / "dog" / "003.png").unlink()
    with pytest.raises(DatasetError, match=r"now has 19 samples and fingerprint .* re-run the data stage"):
        dataset.load()


def test_a_torchvision_split_rebuilds_its_source_through_the_plugin(tmp_path):
    root = _fashion_mnist(tmp_path / "tv", n=40)
    raw = PluginDataset("torchvision", {"name": "FashionMNIST", "root": str(root)}).load()
    train, val, test = split_data(raw, 0.25, 0.2, seed=1)
    assert (len(train), len(val), len(test)) == (30, 10, 20)
    dataset = SplitDataset(str(tmp_path / "test.pt"))
    dataset.save(test)
    loaded = dataset.load()
    assert loaded.origin == {
        "plugin": "torchvision",
        "options": {"name": "FashionMNIST", "root": str(root)},
        "part": "test",
    }
    assert torch.equal(loaded.x, test.x) and loaded.x.shape == (20, 1, 28, 28)


def test_a_split_file_of_the_old_format_says_to_rerun_the_data_stage(tmp_path):
    buffer = io.BytesIO()
    torch.save(
        {"x": torch.zeros(2, 1, 4, 4), "y": torch.zeros(2, dtype=torch.int64), "num_classes": 2}, buffer
    )
    (tmp_path / "old.pt").write_bytes(buffer.getvalue())
    with pytest.raises(DatasetError, match=r"expected a shrinkflow.split/2 split .* re-run the data stage"):
        SplitDataset(str(tmp_path / "old.pt")).load()


def test_a_split_of_tar_shards_reloads_through_the_plugin(tmp_path):
    from tests.core.test_streams import write_shards

    write_shards(tmp_path / "shards", 40, per_shard=15)
    raw = PluginDataset("tar_shards", {"path": str(tmp_path / "shards")}).load()
    train = split_data(raw, 0.25, 0.25, seed=0)[0]
    dataset = SplitDataset(str(tmp_path / "train.pt"))
    dataset.save(train)
    loaded = dataset.load()
    assert loaded.source.sequential and torch.equal(loaded.indices, train.indices)
    assert torch.equal(loaded.for_eval().x, train.for_eval().x)
