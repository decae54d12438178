"""Image transforms from configuration: parsing, augmentation on the training split only, the
evaluation crop, batch-level normalization and channel conversion."""

from __future__ import annotations

import pytest
import torch

from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import DataError, Split, TensorSource
from shrinkflow.core.transforms import Pipeline, build_steps


def _images(n: int = 8, c: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def test_steps_are_parsed_from_names_arguments_and_v2_class_names():
    built = build_steps(
        [
            "horizontal_flip",
            {"resize": 36},
            {"random_crop": {"size": 32, "padding": 4}},
            {"RandomRotation": {"degrees": 10}},
        ]
    )
    assert [cls for cls, _ in built] == ["RandomHorizontalFlip", "Resize", "RandomCrop", "RandomRotation"]
    assert list(built[1][1].size) == [36]
    assert built[2][1].padding == [4, 4, 4, 4]


@pytest.mark.parametrize(
    ("steps", "key", "expected"),
    [
        (["horizontal_flip", {"flipp": 0.5}], "transforms[1]", "one of"),
        ([{"MixUp": {}}], "transforms[0]", "one of"),
        ([{"random_crop": {"size": 32, "paddin": 4}}], "transforms[0]", "arguments RandomCrop accepts"),
        ([{"a": 1, "b": 2}], "transforms[0]", "a step name"),
        ("resize", "transforms", "a list"),
    ],
)
def test_a_bad_step_names_its_position(steps, key, expected):
    with pytest.raises(ConfigError) as info:
        build_steps(steps)
    assert info.value.key == key and expected in str(info.value)


def test_augmentation_runs_on_the_training_split_only():
    x = _images()
    source = TensorSource(x, torch.arange(8) % 2, 2)
    steps = ({"random_crop": {"size": 32, "padding": 4}}, "horizontal_flip")
    train = Split(source, torch.arange(8), transforms=steps, train=True)
    torch.manual_seed(0)
    first = train.x
    second = train.x
    assert first.shape == (8, 3, 32, 32)
    assert not torch.equal(first, second)  # new crops and flips each time it is read
    evaluated = train.for_eval().x
    # random_crop of the image's own size becomes a centre crop of that size: the image itself
    assert torch.equal(evaluated, x.float() / 255)
    assert torch.equal(evaluated, train.for_eval().x)


def test_random_resized_crop_becomes_the_usual_evaluation_crop():
    pipeline = Pipeline([{"random_resized_crop": 28}], train=False)
    (_, resize), (_, crop) = [(type(t).__name__, t) for t in pipeline.items.steps]
    assert list(resize.size) == [32] and list(crop.size) == [28, 28]  # shorter side 28 / 0.875 = 32
    out = pipeline.batch(
        TensorSource(_images(4, 3, 40), torch.zeros(4, dtype=torch.int64), 1), torch.arange(4)
    )
    assert out.shape == (4, 3, 28, 28)


def test_normalize_runs_once_on_the_float_batch():
    x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    mean, std = [0.5, 0.25, 0.0], [0.5, 0.25, 1.0]
    pipeline = Pipeline([{"normalize": {"mean": mean, "std": std}}])
    assert pipeline.items is None and len(pipeline.tail) == 1  # a batch step, not per image
    out = pipeline.batch(TensorSource(x, torch.zeros(2, dtype=torch.int64), 1), torch.arange(2))
    expected = [(128 / 255 - m) / s for m, s in zip(mean, std, strict=True)]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(expected), atol=1e-6)


def test_channels_are_repeated_or_averaged_and_other_counts_refused():
    gray = torch.rand(2, 1, 4, 4)
    rgb = Pipeline(channels=3).batch(
        TensorSource(gray, torch.zeros(2, dtype=torch.int64), 1), torch.arange(2)
    )
    assert rgb.shape == (2, 3, 4, 4) and torch.equal(rgb[:, 2], gray[:, 0])
    color = torch.rand(2, 3, 4, 4)
    one = Pipeline(channels=1).batch(
        TensorSource(color, torch.zeros(2, dtype=torch.int64), 1), torch.arange(2)
    )
    assert torch.allclose(one[:, 0], color.mean(1))
    with pytest.raises(DataError, match=r"images have 3 channels; data\.channels=2"):
        Pipeline(channels=2).batch(TensorSource(color, torch.zeros(2, dtype=torch.int64), 1), torch.arange(2))


class _Ragged(TensorSource):
    """Two sizes of image, as a folder of photos has."""

    def __init__(self) -> None:
        super().__init__(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), 1)

    def item(self, index: int) -> torch.Tensor:
        return torch.zeros(3, 8 + 4 * index, 8, dtype=torch.uint8)

    def batch(self, indices: torch.Tensor) -> None:
        return None

    def describe(self, index: int) -> str:
        return f"'photo{index}.png'"


def test_images_of_two_sizes_fail_naming_files_unless_resized():
    with pytest.raises(DataError, match=r"2 shapes .*'photo0.png'.*'photo1.png'.*add a `resize`"):
        Pipeline().batch(_Ragged(), torch.arange(2))
    out = Pipeline([{"resize": [10, 10]}]).batch(_Ragged(), torch.arange(2))
    assert out.shape == (2, 3, 10, 10) and out.dtype == torch.float32
