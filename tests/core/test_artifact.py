"""The artifact format: safe loading, exact reloads (also in a fresh process), atomic writes, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from shrinkflow import __version__
from shrinkflow.core import artifact
from shrinkflow.core.artifact import ArtifactError, ModelArtifact
from shrinkflow.core.data import Split
from shrinkflow.core.models import ModelSpec
from shrinkflow.core.training import TrainConfig, seed_everything
from shrinkflow.stages import PruneStage, QuantizeStage, run_method

KINDS = ["float", "pruned", "quantized"]


@pytest.fixture
def data() -> Split:
    g = torch.Generator().manual_seed(0)
    return Split.of(torch.rand(32, 1, 8, 8, generator=g), torch.arange(32) % 10, 10)


@pytest.fixture
def mlp() -> ModelArtifact:
    seed_everything(0)
    return ModelArtifact.build(ModelSpec("mlp", {"hidden": [64]}), (1, 8, 8), 10)


def _chain(base: ModelArtifact, data: Split) -> dict[str, ModelArtifact]:
    """float -> magnitude-pruned (80 %, one fine-tuning epoch) -> dynamic int8."""
    pruned, _ = run_method(
        PruneStage(method="magnitude", options={"magnitude": {"sparsity": 0.8}}),
        base,
        data,
        data,
        train_cfg=TrainConfig(epochs=1),
    )
    quantized, _ = run_method(QuantizeStage(method="dynamic_int8"), pruned, data, data)
    return dict(zip(KINDS, [base, pruned, quantized], strict=True))


@pytest.fixture
def chain(mlp, data) -> dict[str, ModelArtifact]:
    return _chain(mlp, data)


def _logits(art: ModelArtifact, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return art.model.eval()(x)


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_identical_predictions(chain, data, tmp_path, kind):
    original = chain[kind]
    path = tmp_path / f"{kind}.pt"
    artifact.save(original, path)
    loaded = artifact.load(path)
    assert torch.equal(_logits(loaded, data.x), _logits(original, data.x))
    assert loaded.recipe == original.recipe and loaded.spec == original.spec
    assert (loaded.input_shape, loaded.num_classes) == ((1, 8, 8), 10)
    assert type(loaded.model[1]) is type(original.model[1])  # quantized modules are rebuilt as such
    assert not loaded.model.training
    from_bytes = artifact.from_bytes(artifact.to_bytes(original))
    assert torch.equal(_logits(from_bytes, data.x), _logits(original, data.x))


def test_the_recipe_records_each_step(chain):
    assert chain["float"].recipe == []
    assert [(s["family"], s["method"]) for s in chain["quantized"].recipe] == [
        ("shrinkflow.pruners", "magnitude"),
        ("shrinkflow.quantizers", "dynamic_int8"),
    ]
    assert chain["quantized"].recipe[0]["config"] == {"sparsity": 0.8, "scope": "global", "exclude": []}


def test_the_pruned_artifact_keeps_its_zeros_after_reload(chain, tmp_path):
    artifact.save(chain["pruned"], tmp_path / "p.pt")
    state = artifact.load(tmp_path / "p.pt").model.state_dict()
    weights = [state["1.weight"], state["3.weight"]]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(0.8 * (64 * 64 + 64 * 10))
    assert all("orig" not in k and "mask" not in k for k in state)


@pytest.mark.parametrize("kind", KINDS)
def test_the_file_is_plain_safe_torch_data_and_its_size_is_to_bytes(chain, tmp_path, kind):
    path = tmp_path / "m.pt"
    artifact.save(chain[kind], path)
    assert path.stat().st_size == len(artifact.to_bytes(chain[kind]))
    payload = torch.load(path, weights_only=True)  # nothing but tensors and primitives
    assert payload["format"] == "shrinkflow.model" and payload["format_version"] == 1
    assert payload["shrinkflow_version"] == __version__ and payload["torch_version"] == str(torch.__version__)
    assert payload["spec"] == {"name": "mlp", "kwargs": {"hidden": [64]}}
    assert payload["input_shape"] == [1, 8, 8] and payload["num_classes"] == 10
    assert payload["recipe"] == chain[kind].recipe
    assert set(payload["state_dict"]) == set(chain[kind].model.state_dict())


def test_to_bytes_is_deterministic(mlp):
    assert artifact.to_bytes(mlp) == artifact.to_bytes(mlp)


def test_a_fresh_process_reloads_identical_predictions(chain, data, tmp_path):
    torch.save(data.x, tmp_path / "x.pt")
    for kind, art in chain.items():
        artifact.save(art, tmp_path / f"{kind}.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from shrinkflow.core import artifact
        x = torch.load("x.pt", weights_only=True)
        out = {{}}
        for kind in {KINDS!r}:
            model = artifact.load(kind + ".pt").model
            with torch.inference_mode():
                out[kind] = model(x)
        torch.save(out, "logits.pt")
        """
    )
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "true"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    logits = torch.load(tmp_path / "logits.pt", weights_only=True)
    for kind, art in chain.items():
        assert torch.equal(logits[kind], _logits(art, data.x)), kind


def test_quantized_artifact_is_about_four_times_smaller(data):
    big = ModelArtifact.build(ModelSpec("mlp", {"hidden": [256, 256]}), (1, 8, 8), 10)
    sizes = {k: len(artifact.to_bytes(a)) for k, a in _chain(big, data).items()}
    assert sizes["pruned"] == pytest.approx(sizes["float"], rel=0.01)  # zeros are stored densely
    assert 3.5 < sizes["float"] / sizes["quantized"] < 4.0  # int8 weights; fp32 biases keep it under 4


def test_save_creates_missing_folders(mlp, tmp_path):
    path = tmp_path / "a" / "b" / "m.pt"
    artifact.save(mlp, path)
    assert artifact.load(path).spec == mlp.spec


# --- errors -------------------------------------------------------------------------------------


def test_a_missing_file(tmp_path):
    with pytest.raises(ArtifactError, match=r"model artifact '.*nope\.pt' does not exist"):
        artifact.load(tmp_path / "nope.pt")


@pytest.mark.parametrize("keep", [0, 1, 64, 200, 0.5, -1], ids=lambda k: f"keep-{k}")
def test_a_truncated_file(mlp, tmp_path, keep):
    path = tmp_path / "m.pt"
    artifact.save(mlp, path)
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:cut])
    with pytest.raises(
        ArtifactError, match=r"model artifact '.*m\.pt' cannot be read safely \(weights_only=True\)"
    ):
        artifact.load(path)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ArtifactError, match="cannot be read safely"):
        artifact.load(path)
    with pytest.raises(ArtifactError, match=r"artifact '<bytes>' cannot be read safely"):
        artifact.from_bytes(b"garbage")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


class _Custom:
    def __init__(self) -> None:
        self.value = 3


@pytest.mark.parametrize("obj", [_Evil(), _Custom()], ids=["reduce", "custom-class"])
def test_arbitrary_pickles_are_refused(tmp_path, obj):
    path = tmp_path / "evil.pt"
    torch.save({"format": "shrinkflow.model", "format_version": 1, "payload": obj}, path)
    with pytest.raises(ArtifactError, match=r"cannot be read safely \(weights_only=True\)") as info:
        artifact.load(path)
    assert "UnpicklingError" in str(info.value)


def test_a_file_without_the_format_header(tmp_path):
    path = tmp_path / "m.pt"
    for payload in ({"weights": torch.zeros(2)}, {"format": "other"}, [1, 2], torch.zeros(3)):
        torch.save(payload, path)
        with pytest.raises(
            ArtifactError, match=r"is not a shrinkflow model artifact \(no format='shrinkflow.model' header\)"
        ):
            artifact.load(path)


def test_an_unknown_format_version(mlp, tmp_path):
    payload = {**mlp.payload(), "format_version": 2}
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(ArtifactError, match="has artifact format_version 2; expected 1"):
        artifact.load(tmp_path / "m.pt")


def test_an_incompatible_state_dict_lists_missing_and_unexpected_keys(mlp, tmp_path):
    other = ModelArtifact.build(ModelSpec("lenet5"), (1, 8, 8), 10)
    torch.save({**mlp.payload(), "state_dict": other.model.state_dict()}, tmp_path / "m.pt")
    with pytest.raises(ArtifactError) as info:
        artifact.load(tmp_path / "m.pt")
    message = str(info.value)
    assert "does not fit the architecture MLP" in message
    assert "missing keys ['1.bias', '1.weight', '3.bias', '3.weight']" in message
    assert "unexpected keys ['classifier.0.bias', 'classifier.0.weight'" in message


def test_an_incompatible_state_dict_lists_shape_mismatches(mlp):
    other = ModelArtifact.build(ModelSpec("mlp", {"hidden": [16]}), (1, 8, 8), 10)
    with pytest.raises(ArtifactError) as info:
        artifact.load_state_dict(mlp.model, other.model.state_dict(), "other.pt")
    message = str(info.value)
    assert "checkpoint 'other.pt' does not fit the architecture MLP" in message
    assert "missing keys [], unexpected keys []" in message
    assert "'1.weight: file (16, 64) vs model (64, 64)'" in message
    assert "'3.weight: file (10, 16) vs model (10, 64)'" in message


def test_a_float_state_dict_does_not_load_into_a_quantized_recipe(mlp, chain, tmp_path):
    payload = {**chain["quantized"].payload(), "state_dict": mlp.model.state_dict()}
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(ArtifactError, match=r"missing keys \['1\._packed_params\._packed_params'"):
        artifact.load(tmp_path / "m.pt")


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"spec": {"name": "no_such_model", "kwargs": {}}}, "unknown model 'no_such_model'"),
        ({"spec": {"name": "mlp", "kwargs": {"hidden": []}}}, "model mlp.hidden"),
        (
            {"recipe": [{"family": "shrinkflow.pruners", "method": "gone", "config": {}}]},
            "unknown pruner 'gone'",
        ),
        (
            {"recipe": [{"family": "shrinkflow.pruners", "method": "magnitude", "config": {"sparsity": 2}}]},
            "magnitude.sparsity=2 is invalid",
        ),
        ({"recipe": [{"family": "shrinkflow.pruners"}]}, "KeyError|'method'"),
    ],
    ids=["unknown-model", "bad-kwargs", "unknown-method", "bad-step-config", "broken-step"],
)
def test_an_artifact_that_cannot_be_rebuilt(mlp, tmp_path, change, text):
    torch.save({**mlp.payload(), **change}, tmp_path / "m.pt")
    with pytest.raises(ArtifactError, match=rf"'.*m\.pt' cannot be rebuilt: .*({text})"):
        artifact.load(tmp_path / "m.pt")


# --- read_checkpoint ----------------------------------------------------------------------------


def test_read_checkpoint_accepts_the_usual_layouts(mlp, tmp_path):
    state = mlp.model.state_dict()
    for name, payload in {
        "plain": state,
        "wrapped": {"state_dict": state, "epoch": 3},
        "artifact": mlp.payload(),
    }.items():
        torch.save(payload, tmp_path / f"{name}.pt")
        checkpoint = artifact.read_checkpoint(tmp_path / f"{name}.pt")
        assert checkpoint.path == str(tmp_path / f"{name}.pt") and len(checkpoint.sha256) == 64
        loaded = checkpoint.state_dict
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_read_checkpoint_refuses_what_is_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "c.pt")
    with pytest.raises(ArtifactError, match=r"checkpoint '.*c\.pt' holds no state_dict"):
        artifact.read_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ArtifactError, match=r"checkpoint '.*x\.pt' does not exist"):
        artifact.read_checkpoint(tmp_path / "x.pt")


# --- atomic writes ------------------------------------------------------------------------------


def _boom(*args, **kwargs):
    raise OSError("disk full")


@pytest.mark.parametrize("target", ["os.replace", "os.fsync", "to_bytes"])
def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temp_file(
    mlp, data, tmp_path, monkeypatch, target
):
    path = tmp_path / "m.pt"
    artifact.save(mlp, path)
    before = path.read_bytes()
    changed = ModelArtifact.build(ModelSpec("mlp", {"hidden": [8]}), (1, 8, 8), 10)
    if target == "to_bytes":
        monkeypatch.setattr(artifact, "to_bytes", _boom)
    else:
        monkeypatch.setattr(artifact.os, target.split(".")[1], _boom)
    with pytest.raises(OSError, match="disk full"):
        artifact.save(changed, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind
    assert torch.equal(_logits(artifact.load(path), data.x), _logits(mlp, data.x))


def test_an_interrupted_save_leaves_no_temp_file(mlp, tmp_path, monkeypatch):
    monkeypatch.setattr(artifact.os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        artifact.save(mlp, tmp_path / "m.pt")
    assert list(tmp_path.iterdir()) == []


def test_saving_over_an_existing_file_replaces_it(mlp, data, tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"old content")
    artifact.save(mlp, path)
    assert path.read_bytes() == artifact.to_bytes(mlp)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_a_saved_artifact_gets_ordinary_file_permissions(mlp, tmp_path):
    old = os.umask(0o022)
    try:
        (tmp_path / "plain").write_bytes(b"x")
        artifact.save(mlp, tmp_path / "m.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.pt").stat().st_mode & 0o777 == 0o644


def test_a_save_removes_what_a_killed_writer_left_but_not_a_live_writers_file(mlp, tmp_path):
    path = tmp_path / "m.pt"
    dead = tmp_path / ".m.pt.4194999.x1y2.tmp"  # above Linux's largest pid: no such process
    live = tmp_path / f".m.pt.{os.getpid()}.z3.tmp"
    other = tmp_path / ".n.pt.4194999.q.tmp"  # another artifact's: not ours to touch
    for tmp in (dead, live, other):
        tmp.write_bytes(b"partial")
    artifact.save(mlp, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.pt", live.name, other.name])
