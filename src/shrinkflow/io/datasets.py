"""Kedro datasets for shrinkflow's own artifacts. All reads are safe (``weights_only=True``)."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset, DatasetError

from shrinkflow import plugins
from shrinkflow.core import artifact as art
from shrinkflow.core.data import DataError, RawData, Source, Split, TensorSource, check_source


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


def load_raw(plugin: str, options: dict[str, Any]) -> RawData:
    """Call the data-set plugin ``plugin`` with ``options``; its RawData records both (``origin``)."""
    loader = plugins.load(plugins.DATASETS, plugin)
    try:
        raw = loader(**options)
    except TypeError as exc:
        raise DatasetError(f"data set {plugin!r} rejected options {options}: {exc}") from exc
    if not isinstance(raw, RawData):
        raise DatasetError(f"data set plugin {plugin!r} returned {type(raw).__name__}; expected RawData")
    raw.origin = {"plugin": plugin, "options": dict(options)}
    return raw


def _cached_raw(plugin: str, options: dict[str, Any]) -> RawData:
    # the files' modification times are part of the key: a rewritten file is read again
    stamps = [
        Path(v).stat().st_mtime_ns if isinstance(v, str) and Path(v).exists() else None
        for v in options.values()
    ]
    return _cached(plugin, json.dumps(options, sort_keys=True), tuple(stamps))


@functools.lru_cache(maxsize=4)
def _cached(plugin: str, options_json: str, _stamps: tuple[int | None, ...]) -> RawData:
    # the three splits of a stage share one source (MNIST is parsed once, a folder listed once)
    return load_raw(plugin, json.loads(options_json))


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
        return load_raw(self._plugin, self._options)

    def save(self, data: RawData) -> None:
        raise DatasetError(f"data set {self._plugin!r} is read-only")

    def _describe(self) -> dict[str, Any]:
        return {"plugin": self._plugin, "options": self._options}


#: what a split file holds (format 2): positions in a source and how to rebuild that source
_FORMAT = "shrinkflow.split/2"
_KEYS = {
    "format",
    "origin",
    "indices",
    "labels",
    "num_classes",
    "fingerprint",
    "transforms",
    "train",
    "channels",
}


class SplitDataset(AbstractDataset[Split, Split]):
    """A train/val/test split in one ``.pt`` file, written atomically: the positions of its samples
    in the data set, their labels, the data-set plugin and options that rebuild the source
    (``origin``), the source's fingerprint and the split's transforms. Not the samples: a split of
    a million images is a few megabytes.

    Persisted (rather than kept in memory) so that each DVC stage, a separate ``kedro run
    --pipelines <stage>``, reads exactly the split the data stage wrote. Loading rebuilds the source
    through its plugin and refuses one whose layout or labels changed since the split was cut. A
    split of a source made in memory (no plugin) stores its tensors instead. Read with
    ``weights_only=True``.
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> Split:
        where = f"split file {str(self._filepath)!r}"
        payload = art._read(Path(self._filepath), "split file")
        if (
            not isinstance(payload, dict)
            or payload.get("format") != _FORMAT
            or set(payload) - _KEYS - {"x", "y"}
        ):
            keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise DataError(
                f"{where} holds {keys}; expected a {_FORMAT} split (keys {sorted(_KEYS)}): re-run the data stage"
            )
        origin = payload["origin"]
        if origin is None:
            source: Source = TensorSource(payload["x"], payload["y"], int(payload["num_classes"]))
        else:
            raw = _cached_raw(origin["plugin"], origin["options"])
            part = origin["part"]
            source = {"test": raw.test, "val": raw.val}.get(part, raw.data)
            if source is None:
                raise DataError(f"{where} was cut from the {part} set of {origin}, which has none now")
        check_source(source, where)
        indices = payload["indices"]
        if source.fingerprint() != payload["fingerprint"] or (
            len(indices) and int(indices.max()) >= len(source)
        ):
            raise DataError(
                f"{where} was cut from {origin or 'tensors'} with fingerprint {payload['fingerprint'][:12]}; "
                f"that data set now has {len(source)} samples and fingerprint {source.fingerprint()[:12]} "
                "(files or labels changed): re-run the data stage"
            )
        if source.num_classes != int(payload["num_classes"]) or not torch.equal(
            source.labels[indices], payload["labels"]
        ):
            raise DataError(
                f"{where}: the labels of its samples differ from the data set's now: re-run the data stage"
            )
        return Split(
            source,
            indices,
            transforms=tuple(json.loads(payload["transforms"])),
            train=bool(payload["train"]),
            channels=payload["channels"],
            origin=origin,
        )

    def save(self, data: Split) -> None:
        if not isinstance(data, Split):
            raise DatasetError(f"{self._filepath}: expected a Split to save, got {type(data).__name__}")
        payload: dict[str, Any] = {
            "format": _FORMAT,
            "origin": data.origin,
            "indices": data.indices.contiguous(),
            "labels": data.y.contiguous(),
            "num_classes": data.num_classes,
            "fingerprint": data.source.fingerprint(),
            "transforms": json.dumps(list(data.transforms)),
            "train": data.train,
            "channels": data.channels,
        }
        if data.origin is None:
            if not isinstance(data.source, TensorSource):
                raise DatasetError(
                    f"{self._filepath}: a split of {type(data.source).__name__} without a plugin origin "
                    "cannot be stored; load the data through a data-set plugin"
                )
            payload.update(x=data.source.x.contiguous(), y=data.source.y.contiguous())
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        art.atomic_write(Path(self._filepath), buffer.getvalue())

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
