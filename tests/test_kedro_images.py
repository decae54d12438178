"""A CIFAR-style run end to end: a folder of 32x32 RGB PNGs, transforms and augmentation from YAML
(conf/images), decoded by DataLoader workers, through the whole DAG with the real `kedro run` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from shrinkflow.core import artifact as art
from tests.test_kedro_run import FAST_EVAL, NO_GATE, kedro, make_project


def write_rgb_digits(root: Path, n: int) -> Path:
    """Digits scaled to 32x32 (every fifth to 40x40: photos come in several sizes) and tinted with a
    random colour, one PNG each, a folder per class."""
    digits = load_digits()
    rng = np.random.default_rng(0)
    for i in range(n):
        big = np.kron(digits.images[i] / 16.0, np.ones((5, 5) if i % 5 == 0 else (4, 4)))
        rgb = (big[..., None] * rng.uniform(0.4, 1.0, 3) * 255).astype(np.uint8)
        folder = root / f"class{digits.target[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(folder / f"{i:05d}.png")
    return root


def test_a_cifar_style_folder_of_two_sizes_runs_the_dag_with_augmentation_from_yaml(tmp_path):
    photos = write_rgb_digits(tmp_path / "photos", 500)
    project = make_project(tmp_path / "project")
    settings = (
        f"image_dir={photos},train_teacher.train.epochs=8,train_teacher.train.batch_size=32,"
        "train_teacher.model.kwargs.resnet20.width=8,train_teacher.train.optimizer=adam,train_teacher.train.lr=0.003,"
        "prune.finetune.epochs=1,distill.train.epochs=1,"
        f"{FAST_EVAL},{NO_GATE}"
    )
    result = kedro(project, "--env", "images", "--params", settings)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    splits = {
        name: torch.load(project / f"data/05_model_input/{name}.pt", weights_only=True)
        for name in ("train", "val", "test")
    }
    assert [len(s["indices"]) for s in splits.values()] == [350, 50, 100]
    assert [s["train"] for s in splits.values()] == [True, False, False]  # augmentation: training split only
    steps = json.loads(splits["train"]["transforms"])
    assert steps[1] == {"random_crop": {"size": 32, "padding": 4}} and steps[2] == "horizontal_flip"
    assert splits["train"]["origin"]["plugin"] == "image_folder"

    metrics = json.loads((project / "data/08_reporting/metrics.json").read_text())
    assert metrics["teacher"]["accuracy"] >= 0.25  # 10 classes: chance is 0.10
    assert metrics["teacher"]["test_samples"] == 100
    assert metrics["onnx"]["agreement"] >= 0.97
    for stage in ("teacher", "pruned", "distilled", "quantized"):
        model = art.load(project / f"data/06_models/{stage}.pt")
        assert model.input_shape == (3, 32, 32)
