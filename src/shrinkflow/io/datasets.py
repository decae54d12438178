"""Kedro datasets for shrinkflow's own artifacts. All reads are safe (``weights_only=True``)."""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from shrinkflow import plugins
from shrinkflow.core import artifact as art
from shrinkflow.core.data import DataError, RawData, Split, check_split


class ModelArtifactDataset(AbstractDataset[art.ModelArtifact, art.ModelArtifact]):
    """A compressed model: spec + recipe + state_dict in one ``.pt`` file, written atomically."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> art.ModelArtifact:
        return art.load(self._filepath)

    def save(self, data: art.ModelArtifact) -> None:
        if not isinstance(data, art.ModelArtifact):
            raise DatasetError(
                f"{self._filepath}: expected a ModelArtifact to save, got {type(data).__name__}"
            )
        art.save(data, self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class OnnxDataset(AbstractDataset[bytes, bytes]):
    """An ONNX model file (the serialized ``ModelProto``), written atomically and checked by
    ``onnx.checker`` on load, so a truncated or foreign file fails here with its path."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> bytes:
        import onnx

        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"ONNX model {str(path)!r} does not exist; run the export pipeline first")
        data = path.read_bytes()
        try:
            onnx.checker.check_model(onnx.load_from_string(data))
        except Exception as exc:  # protobuf DecodeError, onnx ValidationError
            raise DatasetError(
                f"ONNX model {str(path)!r} ({len(data)} bytes) is not a valid ONNX model: "
                f"{type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return data

    def save(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise DatasetError(f"{self._filepath}: expected ONNX bytes to save, got {type(data).__name__}")
        art.atomic_write(Path(self._filepath), data)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class CheckpointDataset(AbstractDataset[None, "art.Checkpoint | None"]):
    """A user's trained weights (a ``state_dict`` file). No path configured loads ``None``:
    the teacher is then trained. Read-only: shrinkflow never writes the user's file."""

    def __init__(self, filepath: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = str(filepath) if filepath not in (None, "", "null", "None") else None
        self.metadata = metadata

    def load(self) -> art.Checkpoint | None:
        return None if self._filepath is None else art.read_checkpoint(self._filepath)

    def save(self, data: None) -> None:
        raise DatasetError("CheckpointDataset is read-only: it never overwrites the user's checkpoint")

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath}


class PluginDataset(AbstractDataset[None, RawData]):
    """Raw data from a data-set plugin (entry-point group ``shrinkflow.datasets``), e.g.
    ``plugin: mnist`` with ``options: {path: ...}``."""

    def __init__(
        self, plugin: str, options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ):
        self._plugin = plugin
        self._options = dict(options or {})
        self.metadata = metadata

    @property
    def plugin(self) -> str:
        """The data-set plugin's registered name (recorded with the run)."""
        return self._plugin

    def load(self) -> RawData:
        loader = plugins.load(plugins.DATASETS, self._plugin)
        try:
            raw = loader(**self._options)
        except TypeError as exc:
            raise DatasetError(f"data set {self._plugin!r} rejected options {self._options}: {exc}") from exc
        if not isinstance(raw, RawData):
            raise DatasetError(
                f"data set plugin {self._plugin!r} returned {type(raw).__name__}; expected RawData"
            )
        return raw

    def save(self, data: RawData) -> None:
        raise DatasetError(f"data set {self._plugin!r} is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"plugin": self._plugin, "options": self._options}


class SplitDataset(AbstractDataset[Split, Split]):
    """A train/val/test split in one ``.pt`` file: ``{"x", "y", "num_classes"}``, written atomically.

    Persisted (rather than kept in memory) so that each DVC stage, a separate ``kedro run
    --pipelines <stage>``, reads exactly the split the data stage wrote. Read with
    ``weights_only=True`` and checked like fresh data.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> Split:
        payload = art._read(Path(self._filepath), "split file")
        if not isinstance(payload, dict) or set(payload) != {"x", "y", "num_classes"}:
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise DataError(
                f"split file {str(self._filepath)!r} holds {keys}; expected keys ['num_classes', 'x', 'y']"
            )
        split = Split(payload["x"], payload["y"], int(payload["num_classes"]))
        return check_split(split, str(self._filepath))

    def save(self, data: Split) -> None:
        if not isinstance(data, Split):
            raise DatasetError(f"{self._filepath}: expected a Split to save, got {type(data).__name__}")
        buffer = io.BytesIO()
        torch.save(
            {"x": data.x.contiguous(), "y": data.y.contiguous(), "num_classes": data.num_classes}, buffer
        )
        art.atomic_write(Path(self._filepath), buffer.getvalue())

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
