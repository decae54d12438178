"""Bad input through the real `kedro run` CLI: each case fails with an error that names the file,
key or value and what was expected, and leaves every artifact of the earlier run as it was.

One good run first (digits; a copy of the session's, tests/conftest.py); then each case runs in the same project and its data files are
hashed before and after. Set SHRINKFLOW_BAD_INPUT_TABLE=<file> to write the table of cases,
commands and first error lines (the closing note of issue 5 quotes it).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from test_kedro_run import kedro

from shrinkflow.core.models import MLP

#: generated or per-run files that a failed run may rewrite: not artifacts
VOLATILE = ("data/gx/", "data/08_reporting/data_docs/", "data/.run.")


#: refused by the parameter checks, before any data set is read: not even a volatile file changes
BEFORE_ANY_DATA = ("unknown plugin name", "out-of-range parameter")


def snapshot(project: Path, volatile: bool = False) -> dict[str, str]:
    files = {}
    for path in sorted((project / "data").rglob("*")):
        rel = path.relative_to(project).as_posix()
        if path.is_file() and (volatile or not rel.startswith(VOLATILE)):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


def error_lines(out: str) -> list[str]:
    """The exception text the CLI prints after its traceback box."""
    lines = [line.rstrip() for line in out.splitlines()]
    last_box = max((i for i, line in enumerate(lines) if line.startswith("╰")), default=-1)
    return [line for line in lines[last_box + 1 :] if line.strip()]


TABLE: list[tuple[str, str, str, str]] = []


def _shown(out: str, tmp_path: Path) -> str:
    """The first two lines of the error (Kedro's wrapper names the dataset, ours the problem)."""
    text = " / ".join(error_lines(out)[:2])
    return text.replace(str(tmp_path.parent), "…")[:300]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_of_good_run) -> Path:
    project = copy_of_good_run(tmp_path_factory.mktemp("bad_input"))
    yield project
    out = os.environ.get("SHRINKFLOW_BAD_INPUT_TABLE")
    if out and TABLE:
        rows = [
            "| case | command | first line of the error | earlier artifacts changed |",
            "|---|---|---|---|",
        ]
        rows += [
            f"| {case} | `{cmd}` | {line.replace('|', '/')} | {changed} |"
            for case, cmd, line, changed in TABLE
        ]
        Path(out).write_text("\n".join(rows) + "\n")


def env_with_raw_data(project: Path, name: str, plugin: str, **options: object) -> str:
    """A Kedro environment whose raw_data is ``plugin`` with ``options`` (validated like base's)."""
    folder = project / "conf" / name
    folder.mkdir(exist_ok=True)
    opts = ", ".join(f"{k}: {v!r}" if not isinstance(v, str) else f"{k}: '{v}'" for k, v in options.items())
    (folder / "catalog.yml").write_text(
        f"raw_data:\n  type: shrinkflow.io.PluginDataset\n  plugin: {plugin}\n  options: {{{opts}}}\n"
        "  validator: {class: shrinkflow.validation.SuiteValidator, on: [load], options: {suite: raw_data}}\n"
    )
    return name


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


def _breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """569 table rows of 30 features, 2 classes, and the feature names."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64), np.array(bunch.feature_names)


def _npz(path: Path, x: np.ndarray, y: np.ndarray, **extra: object) -> Path:
    np.savez(path, x=x, y=y, **extra)
    return path


def _mnist_folder(folder: Path, cut_labels: bool) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    parts = {"train": 300, "t10k": 100}
    for prefix, n in parts.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = (
                bytes([0, 0, 8, array.ndim])
                + b"".join(d.to_bytes(4, "big") for d in array.shape)
                + array.tobytes()
            )
            if cut_labels and stem == "t10k-labels-idx1-ubyte":
                data = data[:-7]  # truncated: 7 labels short
            (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
    return folder


def _png_folder(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(3):
        (folder / f"class_{label}").mkdir(parents=True)
        for i in range(40):
            side = 9 if (label, i) == (2, 17) else 8  # one odd image
            Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8)).save(
                folder / f"class_{label}" / f"{i}.png"
            )
    return folder


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _case(project: Path, tmp: Path, case: str) -> tuple[list[str], list[str]]:
    """(kedro run arguments, texts the output must contain) for one bad input."""
    x, y = _digits_arrays()
    if case == "truncated data file":
        folder = _mnist_folder(tmp / "mnist_cut", cut_labels=True)
        return ["--env", env_with_raw_data(project, "cut", "mnist", path=str(folder))], [
            "t10k-labels-idx1-ubyte.gz",
            "holds 101 bytes; its header (100,) needs 108 (truncated or corrupt)",
        ]
    if case == "corrupt data file":
        path = _npz(tmp / "digits.npz", x, y)
        path.write_bytes(path.read_bytes()[:300] + b"\x00garbage" * 50)
        return ["--env", env_with_raw_data(project, "corrupt", "npz", path=str(path))], [
            f"npz file '{path}' cannot be read",
        ]
    if case == "missing data folder":
        return ["--env", env_with_raw_data(project, "missing", "mnist", path=str(tmp / "nowhere"))], [
            f"MNIST folder '{tmp / 'nowhere'}' does not exist; expected a folder with the IDX files",
        ]
    if case == "missing data file":
        folder = _mnist_folder(tmp / "mnist_part", cut_labels=False)
        (folder / "train-images-idx3-ubyte.gz").unlink()
        return ["--env", env_with_raw_data(project, "nofile", "mnist", path=str(folder))], [
            f"MNIST file train-images-idx3-ubyte[.gz] not found in '{folder}'",
        ]
    if case == "images of mixed shapes":
        folder = _png_folder(tmp / "pngs")
        # files are listed at load and decoded batch by batch; the raw_data suite reads every
        # image's size and stops the run before a batch mixes them
        return ["--env", env_with_raw_data(project, "mixed", "image_folder", path=str(folder))], [
            "Validation failed for dataset 'raw_data' on load",
            "height: expect_column_unique_value_count_to_be_between(min_value=1, max_value=1): observed 2",
            "width: expect_column_unique_value_count_to_be_between(min_value=1, max_value=1): observed 2",
        ]
    if case == "NaN pixels":
        x = x.copy()
        x[[4, 40, 400], 2, 2] = np.nan
        path = _npz(tmp / "nan.npz", x, y)
        return ["--env", env_with_raw_data(project, "nan", "npz", path=str(path))], [
            "Validation failed for dataset 'raw_data' on load",
            "nan_count: expect_column_values_to_be_between(max_value=0.0) at data[4], data[40], data[400] — 3 cases",
        ]
    if case == "labels outside the class set":
        y = y.copy()
        y[[10, 20]] = [12, -1]
        path = _npz(tmp / "labels.npz", x, y, num_classes=10)
        return ["--env", env_with_raw_data(project, "labels", "npz", path=str(path))], [
            "Validation failed for dataset 'raw_data' on load",
            "label: expect_column_values_to_be_between(min_value=0.0) at data[20] — 1 case (e.g. -1)",
            "expect_column_pair_values_a_to_be_greater_than_b(column_A='num_classes', column_B='label') "
            "at data[10] — 1 case (e.g. (10, 12))",
        ]
    if case == "empty data set":
        path = _npz(tmp / "empty.npz", x[:0], y[:0], num_classes=10)
        return ["--env", env_with_raw_data(project, "empty", "npz", path=str(path))], [
            "expect_table_row_count_to_be_between(min_value=100): observed 0",
        ]
    if case == "infinite value in a table column":
        rows, labels, names = _breast_cancer_arrays()
        rows[[5, 9], 3] = np.inf
        path = _npz(tmp / "rows.npz", rows, labels, feature_names=names)
        return ["--env", env_with_raw_data(project, "rows_inf", "npz", path=str(path))], [
            "Validation failed for dataset 'raw_data' on load",
            "inf_count: expect_column_values_to_be_between(max_value=0.0) at data.mean area — 1 case (e.g. 2)",
        ]
    if case == "channels for a table":
        path = _npz(tmp / "rows.npz", *_breast_cancer_arrays()[:2])
        return [
            "--env",
            env_with_raw_data(project, "rows", "npz", path=str(path)),
            "--params",
            "data.channels=3",
        ], [
            "data.channels=3 is invalid: expected null for table rows of shape (N, 30): channels apply to images only",
        ]
    if case == "unknown plugin name":
        return ["--params", "quantize.method=int3_magic"], [
            "quantize.method='int3_magic' is invalid: expected 'none' or a registered name",
            "'dynamic_int8'",
            "'static_int8'",
            "'weight_sharing'",
        ]
    if case == "unknown data-set plugin":
        return ["--env", env_with_raw_data(project, "typo", "mnsit", path="x")], [
            "unknown dataset 'mnsit': available datasets are",
            "'mnist'",
        ]
    if case == "out-of-range parameter":
        return ["--params", "prune.options.magnitude.sparsity=1.5"], [
            "prune.options.magnitude.sparsity=1.5 is invalid: expected a number with 0.0 <= sparsity < 1.0",
        ]
    if case == "checkpoint that does not match the model":
        torch.save(MLP((1, 8, 8), 10, hidden=[7]).state_dict(), tmp / "other.pt")
        return ["--params", f"teacher_checkpoint={tmp / 'other.pt'}"], [
            "does not fit the architecture",
            "shape mismatches",
        ]
    if case == "wrong model import path":
        return ["--params", "train_teacher.model.name=nosuchpkg.mod:Net"], [
            "train_teacher.model.name='nosuchpkg.mod:Net' is invalid",
            "cannot import module 'nosuchpkg.mod'",
        ]
    if case == "model kwargs it does not take":
        # the default mlp's kwargs block is not handed to lenet5; kwargs written for lenet5 are checked
        return ["--params", "train_teacher.model.name=lenet5,train_teacher.model.kwargs.lenet5.hidden=[8]"], [
            "train_teacher.model.kwargs.lenet5={'hidden': [8]} is invalid",
            "arguments lenet5 accepts: ['input_shape', 'num_classes'] (not ['hidden'])",
        ]
    if case == "model that does not fit the data":
        return ["--params", "train_teacher.model.name=torch.nn:Identity"], [
            "train_teacher.model: model torch.nn:Identity={} is invalid",
            "logits of shape (N, 10) for the data's 10 classes, got (1, 8, 8) per sample",
        ]
    if case == "a model static int8 cannot capture":
        # a user module on the project's source path whose forward branches on the data's values
        (project / "src" / "user_nets.py").write_text(
            "import torch\nfrom torch import nn\n\n\n"
            "class ValueBranchNet(nn.Module):\n"
            "    def __init__(self, num_classes: int = 10) -> None:\n"
            "        super().__init__()\n"
            "        self.fc = nn.Linear(64, num_classes)\n\n"
            "    def forward(self, x: torch.Tensor) -> torch.Tensor:\n"
            "        x = x.flatten(1)\n"
            "        return self.fc(x) if x.mean() > 0.5 else self.fc(2 * x)\n"
        )
        return [
            "--params",
            "train_teacher.model.name=user_nets:ValueBranchNet,quantize.method=static_int8",
        ], [
            "quantize.method=static_int8 on train_teacher.model: model='ValueBranchNet' is invalid",
            "a model torch.export can capture for static_int8",
            "use dynamic_int8, weight_sharing or half",
        ]
    if case == "a GPU this machine lacks":
        return ["--params", "runtime.device=cuda:7"], [
            "runtime.device='cuda:7' is invalid: expected a CUDA device this machine has (",
        ]
    raise AssertionError(case)


CASES = [
    "truncated data file",
    "corrupt data file",
    "missing data folder",
    "missing data file",
    "images of mixed shapes",
    "NaN pixels",
    "labels outside the class set",
    "empty data set",
    "infinite value in a table column",
    "channels for a table",
    "unknown plugin name",
    "unknown data-set plugin",
    "out-of-range parameter",
    "checkpoint that does not match the model",
    "wrong model import path",
    "model kwargs it does not take",
    "model that does not fit the data",
    "a model static int8 cannot capture",
    "a GPU this machine lacks",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_clearly_and_changes_no_artifact(project: Path, tmp_path: Path, case: str):
    args, texts = _case(project, tmp_path, case)
    before = snapshot(project, volatile=case in BEFORE_ANY_DATA)
    result = kedro(project, *args)
    out = result.stdout + result.stderr
    flat = " ".join(out.split())
    assert result.returncode != 0, out[-3000:]
    for text in texts:
        assert " ".join(text.split()) in flat, f"{text!r} not in:\n" + "\n".join(error_lines(out))
    assert "teacher epoch" not in out  # refused before any training
    after = snapshot(project, volatile=case in BEFORE_ANY_DATA)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, changed
    TABLE.append((case, "kedro run " + " ".join(args), _shown(out, tmp_path), "no"))


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_a_damaged_model_artifact_is_refused_without_running_its_code(
    project: Path, tmp_path: Path, damage: str
):
    pruned = project / "data/06_models/pruned.pt"
    good = pruned.read_bytes()
    marker = tmp_path / "pwned"
    try:
        if damage == "truncated":
            pruned.write_bytes(good[: len(good) // 2])
        else:
            pruned.write_bytes(pickle.dumps(_Evil(marker)))
        before = snapshot(project)
        result = kedro(project, "--pipelines", "distill")
        out = " ".join((result.stdout + result.stderr).split())
        assert result.returncode != 0
        assert "data/06_models/pruned.pt" in out and "cannot be read safely (weights_only=True)" in out, out[
            -2000:
        ]
        assert not marker.exists()  # nothing was executed
        assert snapshot(project) == before  # distilled.pt and the rest untouched
        TABLE.append(
            (
                f"model artifact {damage}",
                "kedro run --pipelines distill",
                _shown(result.stdout + result.stderr, tmp_path),
                "no",
            )
        )
    finally:
        pruned.write_bytes(good)


def test_the_earlier_run_is_still_recorded(project: Path):
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) >= 1 and all("quantized.accuracy" in r.data.metrics for r in finished)
    assert re.fullmatch(r"[0-9a-f]{32}", finished[-1].info.run_id)
