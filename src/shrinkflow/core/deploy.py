"""Deployment: run the final model on the fastest runtime that computes what it computes.

Which runtime serves a compressed model fastest depends on the model and on the CPU, and cannot be
fixed in code: ONNX Runtime's int8 kernels beat its fp32 ones on Linear layers but lose on
convolutions on AVX2 CPUs without VNNI; ``torch.ao`` int8 overtakes ONNX Runtime int8 on some
CPUs at two threads; sparse CSR weights pay off at large batches only (``benchmarks/peers.md``).
So the candidates are measured on the machine that runs this stage:

* ``eager``: the model as it is, in PyTorch (dense kernels, or ``torch.ao`` int8 ones);
* ``sparse_csr``: its unstructured-sparse Linear layers as CSR products (:mod:`shrinkflow.core.sparse`);
* ``onnx_fp32``: the float model (for an int8 model, its float twin) in ONNX Runtime;
* ``onnx_int8``: the int8 QDQ export in ONNX Runtime (:mod:`shrinkflow.core.export`);
* ``openvino_int8``: NNCF post-training int8 run by OpenVINO (:mod:`shrinkflow.core.openvino`), where
  the optional ``[openvino]`` extra is installed; skipped, saying so, where it is not.

Each is a plugin of the entry-point group ``shrinkflow.runtimes``, so a package can add one (a
TensorRT runtime, say) without forking. For every batch size the fastest candidate (the highest
median per-round speed-up) whose predictions agree with the model in PyTorch on at least
``min_agreement`` of the **validation** inputs is chosen;
test-set agreement and accuracy are measured once, for the report. Candidates are timed side by side
in interleaved rounds against the fp32 teacher in eager PyTorch, so load on a shared machine hits
all of them alike; figures are medians over rounds.

This module imports neither kedro nor mlflow.
"""

from __future__ import annotations

import copy
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from shrinkflow import plugins
from shrinkflow.core import artifact as artifacts
from shrinkflow.core import openvino
from shrinkflow.core.artifact import ModelArtifact
from shrinkflow.core.config import Config
from shrinkflow.core.data import Split
from shrinkflow.core.export import (
    ExportConfig,
    Exported,
    ExportError,
    OnnxModel,
    export_artifact,
    float_twin,
    int8_modules,
    to_onnx,
)
from shrinkflow.core.measure import MeasureConfig, fixed_threads, interleaved_seconds, large_batch
from shrinkflow.core.sparse import SparseCSRConfig, restore, sparsify
from shrinkflow.core.training import reader

__all__ = [
    "Built",
    "Deployment",
    "NotApplicable",
    "ServingRuntime",
    "deploy",
    "load_deployed",
]

log = logging.getLogger(__name__)
Runner = Callable[[torch.Tensor], torch.Tensor]
#: ``export.format`` values that force one runtime instead of measuring (float/int8: the ONNX forms)
FORCED = {"float": "onnx_fp32", "int8": "onnx_int8", "eager": "eager", "sparse_csr": "sparse_csr"}


class NotApplicable(Exception):
    """This runtime cannot serve this model (the message says why)."""


class Built(NamedTuple):
    """A candidate ready to time: the callable, the file that serves it, and its export."""

    runner: Runner
    data: bytes
    suffix: str
    exported: Exported | None = None


@dataclass(frozen=True)
class ServingRuntime:
    """A runtime plugin: ``build(artifact, example, calibration, cfg, threads) -> Built`` (or
    :class:`NotApplicable`). A runtime that rewrites the model's structure (``sparse_csr``) is also
    a recipe step of the artifact it writes: ``config_cls`` and ``restore`` rebuild it on load."""

    description: str
    build: Callable[..., Built]
    config_cls: type[Config] | None = None
    restore: Callable[[nn.Module, Any, dict[str, Any] | None], nn.Module] | None = None

    def config(self, options: dict[str, Any] | None, key: str = "") -> Config:
        if self.config_cls is None:
            raise NotApplicable(f"runtime {key!r} is not a recipe step")
        return self.config_cls.from_dict(options or {}, key=key)


def _eager(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Any, cfg: ExportConfig, threads: int
) -> Built:
    return Built(artifact.model.eval(), artifacts.to_bytes(artifact), ".pt")


def _float_artifact(artifact: ModelArtifact) -> ModelArtifact:
    """The artifact itself when it is float; an int8 one's float twin (dequantized weights)."""
    if not int8_modules(artifact.model):
        return replace(artifact, model=copy.deepcopy(artifact.model))
    try:
        twin = float_twin(artifact)
    except (ExportError, RuntimeError, TypeError) as exc:
        raise NotApplicable(f"no float form of the int8 model: {exc}") from exc
    recipe = [s for s in artifact.recipe if s["family"] != plugins.QUANTIZERS]
    return replace(artifact, model=twin, recipe=recipe)


def _sparse(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Any, cfg: ExportConfig, threads: int
) -> Built:
    base = _float_artifact(artifact)
    options = SparseCSRConfig(min_sparsity=cfg.sparse_min_sparsity)
    model, layers = sparsify(base.model, options)
    if not layers:
        raise NotApplicable(f"no float Linear layer is at least {cfg.sparse_min_sparsity:.0%} sparse")
    step = {
        "family": plugins.RUNTIMES,
        "method": "sparse_csr",
        "config": options.to_dict(),
        "structure": {"layers": layers},
    }
    sparse = replace(base, model=model.eval(), recipe=[*base.recipe, step])
    return Built(sparse.model, artifacts.to_bytes(sparse), ".pt")


def _onnx_fp32(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Any, cfg: ExportConfig, threads: int
) -> Built:
    # the float form of any model, an int8 one's float twin included (PT2E graphs too)
    model = _float_artifact(artifact).model
    try:
        exported = Exported(to_onnx(model, example, cfg.opset), "float", "none")
    except ExportError as exc:
        raise NotApplicable(str(exc)) from exc
    return Built(OnnxModel(exported.data, threads=threads), exported.data, ".onnx", exported)


def _onnx_int8(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Any, cfg: ExportConfig, threads: int
) -> Built:
    try:
        exported = export_artifact(artifact, example, calibration, replace(cfg, format="int8"))
    except ExportError as exc:
        raise NotApplicable(str(exc)) from exc
    return Built(OnnxModel(exported.data, threads=threads), exported.data, ".onnx", exported)


def _openvino_int8(
    artifact: ModelArtifact, example: torch.Tensor, calibration: Any, cfg: ExportConfig, threads: int
) -> Built:
    why = openvino.unavailable()
    if why:
        raise NotApplicable(why)
    try:
        fp32 = to_onnx(_float_artifact(artifact).model, example, cfg.opset)
    except ExportError as exc:
        raise NotApplicable(str(exc)) from exc
    model = openvino.nncf_int8(openvino.read_onnx(fp32), calibration)
    return Built(openvino.OpenVinoModel(model, threads), openvino.to_ir_tar(model), ".ovir")


eager = ServingRuntime("PyTorch eager (the model as it is)", _eager)
sparse_csr = ServingRuntime(
    "PyTorch, sparse Linear weights as CSR (torch.sparse)", _sparse, SparseCSRConfig, restore
)
onnx_fp32 = ServingRuntime("ONNX Runtime fp32 (an int8 model's float twin)", _onnx_fp32)
onnx_int8 = ServingRuntime("ONNX Runtime int8 (QDQ)", _onnx_int8)
openvino_int8 = ServingRuntime(
    "OpenVINO int8: NNCF post-training quantization of the float export (the [openvino] extra)",
    _openvino_int8,
)


def _labels(runner: Runner, data: Split, batch_size: int) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([runner(xb).argmax(1) for xb, _ in reader(data, batch_size)])


@dataclass
class Deployment:
    """Every candidate measured, the choice per batch size, and what serves at ``serve_batch``."""

    rows: list[dict[str, Any]]
    chosen: dict[int, str]
    runtime: str
    built: dict[str, Built]
    skipped: dict[str, str]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def served(self) -> Built:
        return self.built[self.runtime]

    def to_dict(self) -> dict[str, Any]:
        """The report's ``deployment`` section (plain JSON)."""
        return {
            **self.settings,
            "runtime": self.runtime,
            "suffix": self.served.suffix,
            "chosen": {str(b): r for b, r in self.chosen.items()},
            "candidates": self.rows,
            "skipped": self.skipped,
        }


def deploy(
    artifact: ModelArtifact,
    teacher: ModelArtifact,
    val: Split,
    test: Split,
    calibration: Sequence[torch.Tensor],
    cfg: ExportConfig,
    measure: MeasureConfig,
) -> Deployment:
    """Build every runtime of ``cfg.runtimes`` that applies, time them beside the teacher in eager
    PyTorch at each of ``cfg.batch_sizes``, and choose per batch size (see the module doc)."""
    val, test = val.for_eval(), test.for_eval()
    example = val.head(2)
    built: dict[str, Built] = {}
    skipped: dict[str, str] = {}
    with fixed_threads(measure.threads):
        for name in cfg.runtimes:
            runtime = plugins.load(plugins.RUNTIMES, name)
            try:
                built[name] = runtime.build(artifact, example, list(calibration), cfg, measure.threads)
            except NotApplicable as exc:
                skipped[name] = str(exc)
                log.info("runtime %s skipped: %s", name, exc)
        bs = measure.eval_batch_size
        reference = {
            "val": _labels(artifact.model.eval(), val, bs),
            "test": _labels(artifact.model.eval(), test, bs),
        }
        agreement: dict[str, dict[str, float]] = {}
        accuracy: dict[str, float] = {}
        for name, b in built.items():
            predicted = {"val": _labels(b.runner, val, bs), "test": _labels(b.runner, test, bs)}
            agreement[name] = {s: float((predicted[s] == reference[s]).float().mean()) for s in predicted}
            accuracy[name] = float((predicted["test"] == test.y).float().mean())
        runners: dict[str, Runner] = {
            "teacher": teacher.model.eval(),
            **{n: b.runner for n, b in built.items()},
        }
        sample = val.head(max(cfg.batch_sizes))
        inputs = {b: large_batch(sample, b).contiguous() for b in cfg.batch_sizes}
        runs = {b: measure.latency_runs if b == 1 else measure.throughput_runs for b in cfg.batch_sizes}
        seconds = interleaved_seconds(runners, inputs, cfg.rounds, runs, measure.warmup)
    rows, chosen = [], {}
    for batch in cfg.batch_sizes:
        base = seconds["teacher"][batch]
        eligible = [n for n in built if agreement[n]["val"] >= cfg.min_agreement]
        timed = {n: statistics.median(seconds[n][batch]) for n in built}
        # each round's ratio to the teacher timed in the same round, then the median: load that
        # hits a whole round cancels, so this (not the raw median time) ranks the candidates
        speedup = {
            n: statistics.median(t / s for t, s in zip(base, seconds[n][batch], strict=True)) for n in built
        }
        if eligible:
            chosen[batch] = max(eligible, key=speedup.__getitem__)
        for name in built:
            rows.append(
                {
                    "runtime": name,
                    "description": plugins.load(plugins.RUNTIMES, name).description,
                    "batch": batch,
                    "latency_ms": 1e3 * timed[name],
                    "throughput_sps": batch / timed[name],
                    "speedup": speedup[name],
                    "val_agreement": agreement[name]["val"],
                    "test_agreement": agreement[name]["test"],
                    "test_accuracy": accuracy[name],
                    "eligible": name in eligible,
                    "chosen": chosen.get(batch) == name,
                }
            )
    runtime = _served(cfg, chosen, built, skipped)
    settings = {
        "reference": "the final model in PyTorch",
        "selection_split": "validation",
        "min_agreement": cfg.min_agreement,
        "threads": measure.threads,
        "serve_batch": cfg.serve_batch,
        "rounds": cfg.rounds,
        "format": cfg.format,
    }
    return Deployment(rows, chosen, runtime, built, skipped, settings)


def _served(
    cfg: ExportConfig, chosen: dict[int, str], built: dict[str, Built], skipped: dict[str, str]
) -> str:
    if cfg.format in FORCED:
        name = FORCED[cfg.format]
        if name not in built:
            reason = skipped.get(name, f"it is not in export.runtimes {cfg.runtimes}")
            raise ExportError(
                f"export.format {cfg.format!r} asks for runtime {name!r}, which cannot serve this model: {reason}"
            )
        return name
    if cfg.serve_batch not in chosen:
        raise ExportError(
            f"no runtime agrees with the model on >= {cfg.min_agreement:.1%} of the validation inputs at "
            f"batch {cfg.serve_batch}; measured {sorted(built)}, skipped {skipped}: lower export.min_agreement "
            "or add export.runtimes"
        )
    return chosen[cfg.serve_batch]


def onnx_file(
    deployment: Deployment,
    artifact: ModelArtifact,
    calibration: Sequence[torch.Tensor],
    cfg: ExportConfig,
    example: torch.Tensor,
) -> Exported:
    """The ONNX file the export also writes: the served one when an ONNX runtime serves, else the
    int8 export of an int8 model and the float export of a float one (what ``format: int8``/``float`` write)."""
    served = deployment.served
    if served.exported is not None:
        return served.exported
    fmt = "int8" if int8_modules(artifact.model) else "float"
    name = FORCED[fmt]
    if name in deployment.built and deployment.built[name].exported is not None:
        return deployment.built[name].exported  # type: ignore[return-value]
    return export_artifact(artifact, example, list(calibration), replace(cfg, format=fmt))


def load_deployed(folder: str | Path, threads: int = 1) -> Runner:
    """The deployed model in ``folder`` (``model.onnx`` or ``model.pt`` beside ``deployment.json``)
    as a callable: a float tensor in, logits out; artifacts load with ``weights_only=True``."""
    folder = Path(folder)
    manifest_path = folder / "deployment.json"
    if not manifest_path.is_file():
        raise artifacts.ArtifactError(
            f"{str(folder)!r} holds no deployment.json; expected an export stage's output folder"
        )
    manifest = json.loads(manifest_path.read_text())
    path = folder / f"model{manifest.get('suffix', '')}"
    if not path.is_file():
        raise artifacts.ArtifactError(
            f"{str(path)!r} does not exist; deployment.json names runtime {manifest.get('runtime')!r}"
        )
    if path.suffix == ".onnx":
        return OnnxModel(path.read_bytes(), threads=threads)
    if path.suffix == ".ovir":
        why = openvino.unavailable()
        if why:
            raise artifacts.ArtifactError(
                f"{str(path)!r} is served by OpenVINO, which cannot run here: {why}"
            )
        return openvino.OpenVinoModel(openvino.from_ir_tar(path.read_bytes()), threads)
    return artifacts.load(path).model.eval()
