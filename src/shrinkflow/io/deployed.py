"""The deployed model: one folder with the chosen runtime's file and a manifest that names it."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from shrinkflow.core import artifact as art

SUFFIXES = (".pt", ".onnx", ".ovir")  # PyTorch artifact, ONNX, OpenVINO IR (tar)


class DeployedModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """``{"data": bytes, "manifest": {"runtime": ..., "suffix": ".onnx" | ".pt" | ".ovir", ...}}`` stored as
    ``<folder>/model<suffix>`` beside ``<folder>/deployment.json``
    (:func:`shrinkflow.core.deploy.load_deployed` serves it).

    Each file is written atomically, the model before the manifest, and a model file of the other
    suffix is removed last: at every moment the manifest names a complete file."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._folder = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        folder = Path(self._folder)
        manifest_path = folder / "deployment.json"
        if not manifest_path.is_file():
            raise DatasetError(f"{str(folder)!r} holds no deployment.json; run the export pipeline first")
        manifest = json.loads(manifest_path.read_text())
        path = folder / f"model{manifest.get('suffix')}"
        if manifest.get("suffix") not in SUFFIXES or not path.is_file():
            raise DatasetError(
                f"{str(manifest_path)!r} names {path.name!r}, which is missing; expected one of "
                f"{['model' + s for s in SUFFIXES]} beside it"
            )
        return {"data": path.read_bytes(), "manifest": manifest}

    def save(self, data: dict[str, Any]) -> None:
        manifest = data.get("manifest") if isinstance(data, dict) else None
        if (
            not isinstance(manifest, dict)
            or manifest.get("suffix") not in SUFFIXES
            or not isinstance(data.get("data"), bytes)
        ):
            raise DatasetError(
                f"{self._folder}: expected {{'data': bytes, 'manifest': {{'suffix': one of {list(SUFFIXES)}, ...}}}}"
            )
        folder = Path(self._folder)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = manifest["suffix"]
        art.atomic_write(folder / f"model{suffix}", data["data"])
        art.atomic_write(folder / "deployment.json", (json.dumps(manifest, indent=2) + "\n").encode())
        for other in SUFFIXES:
            if other != suffix:
                (folder / f"model{other}").unlink(missing_ok=True)

    def _exists(self) -> bool:
        return (Path(self._folder) / "deployment.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._folder)}
