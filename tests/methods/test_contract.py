"""The method contract: every prune, distill and quantize method on every kind of model.

Each (method, model) either works -- a forward pass, an artifact that reloads with identical
predictions in a new process, an ONNX export that agrees with the PyTorch model -- or is refused by
the method's ``check`` before any training, with a message naming the method, the construct and
what to use instead. ``REFUSED`` lists the refusals (the README's methods table says the same).

The models: an MLP, LeNet-5, ResNet-20 (BatchNorm, residual sums, 1x1 projection shortcuts),
MobileNetV2 (depthwise convolutions, inverted residuals) and a user's module imported by path from
a folder on ``sys.path`` whose ``forward`` branches on the input's rank, which ``torch.fx`` symbolic
tracing cannot follow. Narrow widths, 4-epoch teachers and one epoch per method on digits keep it
to about 5 minutes on one core (marked slow): this checks that each method applies and round-trips;
the accuracy of each method is checked in its own tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from shrinkflow import plugins
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import ConfigError
from shrinkflow.core.data import calibration_batches
from shrinkflow.core.export import ExportConfig, OnnxModel, export_artifact
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, fit, predict, seed_everything
from shrinkflow.stages import DistillStage, PruneStage, QuantizeStage, run_method

USER_MODULE = '''
import torch
from torch import nn


class ShapeBranchNet(nn.Module):
    """A user's residual CNN that takes flat (N, 64) or image (N, 1, 8, 8) batches."""

    def __init__(self, channels: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # torch.fx symbolic tracing cannot follow this
            x = x.view(x.shape[0], 1, 8, 8)
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(y)) + x)
        return self.fc(x.mean(dim=(2, 3)))


class ValueBranchNet(nn.Module):
    """Branches on the data's values: no tracer that records one path can capture it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.fc(x) if x.mean() > 0.5 else self.fc(x * 2)
'''

#: (model name, kwargs): specs are built in the test, once the user's folder is importable
MODELS = {
    "mlp": ("mlp", {"hidden": [32]}),
    "lenet5": ("lenet5", {}),
    "resnet20": ("resnet20", {"width": 4}),
    "mobilenet_v2": ("mobilenet_v2", {"width_mult": 0.25}),
    "user": ("contract_user_models:ShapeBranchNet", {"channels": 8}),
}
STAGES = {plugins.PRUNERS: PruneStage, plugins.DISTILLERS: DistillStage, plugins.QUANTIZERS: QuantizeStage}
#: settings that keep the multi-step methods short; everything else is the method's default
OPTIONS = {
    "agp": {"steps": 2, "epochs_per_step": 1},
    "channel": {"ratio": 0.25},
    "weight_sharing": {"bits": 4},
}
#: (method, model) pairs refused before training, and the words their message must contain
REFUSED: dict[tuple[str, str], tuple[str, ...]] = {}
METHODS = [
    (family, name) for family in STAGES for name in plugins.available(family) if name != "example_random"
]


@pytest.fixture(scope="module")
def user_models(tmp_path_factory) -> Path:
    """The user's module in a folder of its own, importable as on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("user_models")
    (folder / "contract_user_models.py").write_text(textwrap.dedent(USER_MODULE))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("contract_user_models", None)


def _teacher(spec: ModelSpec, train) -> ModelArtifact:
    seed_everything(0)
    teacher = ModelArtifact.build(spec, train.input_shape, train.num_classes)
    fit(teacher.model, train, TrainConfig(epochs=4, lr=3e-3))  # BatchNorm statistics settled
    return teacher


def _reload_in_a_new_process(folder: Path, cases: dict[str, Path], test_x: Path, user_models: Path) -> dict:
    """{case: bool}: each artifact loaded in a fresh interpreter predicts exactly as before."""
    script = textwrap.dedent(
        """
        import json, sys, torch
        from shrinkflow.core.artifact import load
        from shrinkflow.core.training import predict
        x = torch.load(sys.argv[1])
        cases = json.loads(sys.argv[2])
        out = {}
        for name, path in cases.items():
            art = load(path)
            out[name] = torch.equal(predict(art.model, x), torch.load(path + ".logits"))
        print("RESULT " + json.dumps(out))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_models), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", script, str(test_x), json.dumps({k: str(v) for k, v in cases.items()})],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.parametrize("model", list(MODELS))
def test_every_method_works_on_the_model_or_is_refused_before_training(
    model, digits_splits, user_models, tmp_path
):
    train, val, test = digits_splits
    spec = ModelSpec(*MODELS[model])
    teacher = _teacher(spec, train)
    problems, saved, summary = [], {}, {}
    for family, name in METHODS:
        stage = STAGES[family](method=name, options={name: OPTIONS.get(name, {})})
        plugin = plugins.load(family, name)
        case = f"{name}/{model}"
        if plugin.check is not None:
            try:
                plugin.check(
                    ModelArtifact.build(spec, train.input_shape, 10).model,
                    stage.method_config,
                    train.input_shape,
                )
            except ConfigError as exc:
                words = REFUSED.get((name, model))
                if words is None or not all(w in str(exc) for w in words):
                    problems.append(f"{case}: refused unexpectedly: {exc}")
                summary[case] = "refused"
                continue
        if (name, model) in REFUSED:
            problems.append(f"{case}: expected a refusal before training, the check passed")
            continue
        try:
            out, _ = run_method(
                stage, teacher, train, val, train_cfg=TrainConfig(epochs=1, lr=1e-3), teacher=teacher
            )
            logits = predict(out.model, test.x)
            assert logits.shape == (len(test), 10) and bool(torch.isfinite(logits).all()), "bad logits"
            path = tmp_path / f"{family.rsplit('.', 1)[-1]}-{name}.pt"
            artifact.save(out, path)
            torch.save(logits, str(path) + ".logits")
            saved[case] = path
            exported = export_artifact(out, test.x[:2], calibration_batches(train, 4, 128), ExportConfig())
            onnx_logits = OnnxModel(exported.data).predict(test.x)
            agreement = float((onnx_logits.argmax(1) == logits.argmax(1)).float().mean())
            accuracy = float((logits.argmax(1) == test.y).float().mean())
            summary[case] = (
                f"acc {accuracy:.3f} onnx {exported.format}/{exported.qparams} agree {agreement:.4f}"
            )
            # ONNX Runtime recalibrates a dynamic int8 model's activations (qparams "calibrated"),
            # which differs from per-batch ranges on near-ties; every other export computes what
            # the PyTorch model computes, up to rounding
            if agreement < (0.97 if exported.qparams == "calibrated" else 0.99):
                problems.append(
                    f"{case}: ONNX ({exported.format}, qparams {exported.qparams}) agrees on {agreement:.4f}"
                )
        except Exception as exc:  # the contract: nothing fails mid-run
            problems.append(f"{case}: failed mid-run: {type(exc).__name__}: {str(exc)[:400]}")
    test_x = tmp_path / "test_x.pt"
    torch.save(test.x, test_x)
    reloaded = _reload_in_a_new_process(tmp_path, saved, test_x, user_models)
    problems += [
        f"{case}: reloaded predictions differ in a new process" for case, same in reloaded.items() if not same
    ]
    print(json.dumps(summary, indent=1))
    assert not problems, "\n".join(problems)
