"""The compressed-model artifact: architecture spec + applied recipe + state_dict, in one file.

Pruned and quantized models change values, shapes and module types, so a bare state_dict cannot be
loaded into a fresh model, and a pickled module would need unsafe unpickling. An artifact instead
stores how to *rebuild* the model (the :class:`ModelSpec` and each recipe step's ``restore``) and
the tensors. It is read with ``torch.load(weights_only=True)`` only: no arbitrary object is ever
unpickled. Writes are atomic, so an interrupted save never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shrinkflow import __version__, plugins
from shrinkflow.core.config import ConfigError
from shrinkflow.core.models import ModelSpec, build_model

__all__ = [
    "ArtifactError",
    "Checkpoint",
    "ModelArtifact",
    "atomic_write",
    "from_bytes",
    "load",
    "load_pretrained",
    "load_state_dict",
    "read_checkpoint",
    "rebuild",
    "save",
    "to_bytes",
]

log = logging.getLogger(__name__)

FORMAT = "shrinkflow.model"
FORMAT_VERSION = 1


class ArtifactError(ValueError):
    """A model file is missing, corrupt, or incompatible with the architecture."""


@dataclass
class ModelArtifact:
    """A model together with everything needed to rebuild it."""

    model: nn.Module
    spec: ModelSpec
    input_shape: tuple[int, ...]
    num_classes: int
    recipe: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def build(cls, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> ModelArtifact:
        return cls(build_model(spec, input_shape, num_classes), spec, tuple(input_shape), num_classes)

    def with_step(
        self,
        model: nn.Module,
        family: str,
        method: str,
        config: Mapping[str, Any],
        structure: Mapping[str, Any] | None = None,
    ) -> ModelArtifact:
        """A new artifact for ``model``, the result of applying ``method`` to this one.

        ``structure`` is the method's plain record of data-dependent shapes (see ``Method``)."""
        step: dict[str, Any] = {"family": family, "method": method, "config": dict(config)}
        if structure is not None:
            step["structure"] = dict(structure)
        return replace(self, model=model, recipe=[*self.recipe, step])

    def payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "shrinkflow_version": __version__,
            "torch_version": str(torch.__version__),
            "spec": self.spec.to_dict(),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "recipe": self.recipe,
            "state_dict": self.model.state_dict(),
        }


def to_bytes(artifact: ModelArtifact) -> bytes:
    """The exact bytes :func:`save` writes (used to measure artifact size without touching disk)."""
    buffer = io.BytesIO()
    torch.save(artifact.payload(), buffer)
    return buffer.getvalue()


def save(artifact: ModelArtifact, path: str | os.PathLike[str]) -> None:
    """Write atomically: a temporary file in the same folder, then rename over ``path``."""
    atomic_write(Path(path), to_bytes(artifact))


def _stale_temp_files(path: Path) -> list[Path]:
    """Temporary files beside ``path`` left by a writer that no longer runs (killed mid-save)."""
    stale = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            stale.append(tmp)
        except PermissionError:  # alive, someone else's
            pass
    return stale


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename it over ``path``.

    A reader sees the old file or the new one, never a part; a process killed at any point leaves
    the old file as it was. The temporary name carries the writer's PID (``.<name>.<pid>.<random>.tmp``)
    so the next save removes what a killed writer left, and never a live writer's file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_temp_files(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the mode any other written file gets (umask)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # make the rename itself durable (a power cut after this returns keeps the new file)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(source: str | os.PathLike[str] | bytes, what: str) -> Any:
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise ArtifactError(f"{what} {str(source)!r} does not exist")
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with warnings.catch_warnings():  # torch's own quantized-tensor rebuild warns about TypedStorage
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            return torch.load(stream, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/corrupt/unsafe files
        raise ArtifactError(
            f"{what} {name!r} cannot be read safely (weights_only=True): {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


def load_state_dict(model: nn.Module, state: Mapping[str, Any], source: str) -> nn.Module:
    """``model.load_state_dict`` with an error that lists every incompatibility."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own
        and isinstance(v, torch.Tensor)
        and isinstance(own[k], torch.Tensor)
        and v.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ArtifactError(
            f"checkpoint {source!r} does not fit the architecture {type(model).__name__}: "
            f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}, shape mismatches {shapes[:8]}"
        )
    model.load_state_dict(state)  # not dict(state): that drops _metadata (module versions)
    return model


def from_payload(payload: Any, source: str) -> ModelArtifact:
    """Rebuild an artifact: build the architecture, re-apply each step's structure, load tensors."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{source!r} is not a shrinkflow model artifact (no format={FORMAT!r} header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{source!r} has artifact format_version {version!r}; expected {FORMAT_VERSION}")
    try:
        spec = ModelSpec.from_dict(payload["spec"], key="spec")
        artifact = ModelArtifact.build(spec, tuple(payload["input_shape"]), int(payload["num_classes"]))
        model = rebuild(artifact.model, payload["recipe"])
    except (ConfigError, plugins.PluginError, KeyError) as exc:
        raise ArtifactError(f"{source!r} cannot be rebuilt: {exc}") from exc
    load_state_dict(model, payload["state_dict"], source)
    model.eval()
    return replace(artifact, model=model, recipe=list(payload["recipe"]))


def rebuild(model: nn.Module, recipe: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> nn.Module:
    """Re-apply each recipe step's ``restore`` (structure only, no tensors) to a fresh ``model``;
    steps of the plugin families in ``skip`` are left out."""
    for step in recipe:
        if step["family"] in skip:
            continue
        method = plugins.load(step["family"], step["method"])
        model = method.restore(
            model, method.config(step["config"], key=step["method"]), step.get("structure")
        )
    return model


def from_bytes(data: bytes) -> ModelArtifact:
    return from_payload(_read(data, "artifact"), "<bytes>")


def load(path: str | os.PathLike[str]) -> ModelArtifact:
    """Load an artifact written by :func:`save` (safe: weights_only)."""
    return from_payload(_read(path, "model artifact"), str(path))


@dataclass
class Checkpoint:
    """A user's trained weights as read from ``path``, with the file's sha256 for the record."""

    state_dict: dict[str, Any]
    path: str
    sha256: str


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """A user's checkpoint: a plain ``state_dict`` file, or a shrinkflow artifact (its state_dict)."""
    payload = _read(path, "checkpoint")
    if isinstance(payload, dict) and payload.get("format") == FORMAT:
        payload = payload["state_dict"]
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]  # the common {"state_dict": ..., "epoch": ...} layout
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ArtifactError(f"checkpoint {str(path)!r} holds no state_dict; expected a mapping of tensors")
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return Checkpoint(payload, str(path), digest)


def load_pretrained(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load pretrained weights into a freshly built ``model`` where names and shapes match (a
    classifier trained for another class count keeps its initialisation). Returns the keys left
    as initialised; raises ArtifactError if nothing matched (another architecture)."""
    state = read_checkpoint(path).state_dict
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not fits:
        raise ArtifactError(
            f"pretrained weights {str(path)!r} share no tensor (name and shape) with {type(model).__name__}: "
            f"file keys {sorted(state)[:6]}, model keys {sorted(own)[:6]}"
        )
    model.load_state_dict(fits, strict=False)
    kept = sorted(set(own) - set(fits))
    if kept:
        log.info("pretrained %s: %d tensors loaded, kept as initialised: %s", path, len(fits), kept[:8])
    return kept
