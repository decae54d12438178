"""MLflow: the typed parameters, and what a run records beyond them (tags, metrics, the model)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook, _flatten_dict

from shrinkflow import __version__, plugins
from shrinkflow.core import distributed
from shrinkflow.hooks.epochs import CURVES, EpochMetrics
from shrinkflow.stages import MAKER, MODELS, DistillStage, PruneStage, QuantizeStage
from shrinkflow.tracking import server_access

log = logging.getLogger(__name__)

#: The dataset holding the final compressed model, logged as an MLflow model.
FINAL_MODEL = "quantized_model"
#: The quality-gate table and its suite (catalog `quality_gates`, gx_suites.yml `quality_gates`).
GATES = "quality_gates"
TEACHER_RECORD = "train_teacher_record"
FAMILY_OF_RECORD = {f"{s.KEY}_record": s.FAMILY for s in (PruneStage, DistillStage, QuantizeStage)}


def _plain(value: Any) -> Any:
    return (
        dataclasses.asdict(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type)
        else value
    )


class MlflowParamsHook(MlflowHook):
    """kedro-mlflow's hook, handed the typed parameters as plain dicts, and logging all of them.

    Kedro builds ``params:<stage>`` into validated dataclasses before nodes run; kedro-mlflow
    flattens dicts (``prune.options.agp.sparsity``) but would log a dataclass as one long repr.
    It also logs only the parameters of the nodes that run, so a DVC stage's run (one pipeline)
    would carry only that stage's: here every parameter is logged when the run opens, and a
    node's are logged again (same values) as kedro-mlflow does. Registered in ``settings.HOOKS``
    in place of the plugin's own instance.
    """

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        if not distributed.is_main():  # under torchrun only rank 0 sets up MLflow and records
            self._is_mlflow_enabled = False
            return
        with server_access():  # a server's 401 names it and the credentials to set
            super().after_context_created(context)
        self._all_params = {k: _plain(v) for k, v in context.params.items()}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        if not distributed.is_main():  # under torchrun only rank 0 records the run
            self._is_mlflow_enabled = False
            return
        with server_access(self.mlflow_config.tracking.experiment.name):  # 403 before the run exists
            super().before_pipeline_run(run_params, pipeline, catalog)
        if self._is_mlflow_enabled and getattr(self, "_all_params", None):
            params = self._all_params
            if self.flatten:
                params = _flatten_dict(d=params, recursive=self.recursive, sep=self.sep)
            for key, value in params.items():
                self._log_param(self.sanitize_param_name(key), value)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool) -> None:
        super().before_node_run(node, catalog, {k: _plain(v) for k, v in inputs.items()}, is_async)


def _git(project: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=project, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


class TrackingHook:
    """What a run records in MLflow beyond kedro-mlflow's parameters and catalog artifacts.

    kedro-mlflow's ``MlflowHook`` opens the run before the pipeline and closes it after; this hook
    only writes into that open run:

    - tags: git commit (and whether the tree was dirty), shrinkflow's version, ``DVC_EXP_NAME``
      when DVC runs the stage, the model and data-set plugins and each stage's method plugin
      with its distribution and version;
    - metrics: each stage's evaluation as ``<stage>.<metric>`` when it is saved (in a DVC stage
      that only reports, from ``metrics_json``), the ONNX export's as ``onnx.<metric>``, each serving
      runtime's as ``deploy.<runtime>.b<batch>.<metric>`` with tags ``deploy.runtime`` and
      ``deploy.chosen.b<batch>``;
    - the final compressed model as an MLflow pyfunc model (``shrinkflow.mlflow_model``) holding
      the artifact file itself;
    - the quality gates' outcome as the tag ``quality_gates`` (``passed`` or ``failed: <stages>``
      when the suite only warns; a failing gate set to fail ends the run as FAILED);
    - for the recipe search (``--pipelines search``, run named ``search:<study>``): each trial this
      worker runs as a child run (tag ``mlflow.parentRunId``) with its sampled parameters, its
      metrics and its state, and the chosen trial's metrics as ``search.chosen.<metric>``.

    It writes only into the run that was open when this pipeline started: with tracking switched
    off (no active run then), or when another run is active later (a second session in the same
    process), it does nothing.
    """

    def __init__(self) -> None:
        self._project: Path | None = None
        self._params: dict[str, Any] = {}
        self._raw_plugin: str | None = None
        self._logged: set[str] = set()
        self._run_id: str | None = None
        self._listening = contextlib.ExitStack()

    def _run(self) -> Any:
        import mlflow

        run = mlflow.active_run()
        return run if run is not None and run.info.run_id == self._run_id else None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        self._project = Path(context.project_path)
        self._params = context.params

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        try:
            self._raw_plugin = getattr(catalog.get("raw_data"), "plugin", None)
        except Exception:  # a catalog without raw_data (a user's own) is fine
            self._raw_plugin = None

    @hook_impl(trylast=True)  # after MlflowHook has opened the run
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        import mlflow

        self._logged = set()
        active = mlflow.active_run()
        self._run_id = None if active is None else active.info.run_id
        if active is None:
            return

        tags: dict[str, str] = {"shrinkflow.version": __version__}
        project = self._project or Path.cwd()
        commit = _git(project, "rev-parse", "HEAD")
        if commit:
            tags["mlflow.source.git.commit"] = commit
            tags["git.dirty"] = str(bool(_git(project, "status", "--porcelain", "--untracked-files=no")))
        if os.environ.get("DVC_EXP_NAME"):
            tags["DVC_EXP_NAME"] = os.environ["DVC_EXP_NAME"]
        if os.environ.get("DVC_STAGE"):
            tags["DVC_STAGE"] = os.environ["DVC_STAGE"]
        teacher = self._params.get("train_teacher")
        model = getattr(getattr(teacher, "model", None), "name", None)
        for key, group, name in (
            ("model", plugins.MODELS, model),
            ("dataset", plugins.DATASETS, self._raw_plugin),
        ):
            if isinstance(name, str) and name in plugins.available(group):
                tags.update(_plugin_tags(key, plugins.info(group, name).to_dict()))
        names = run_params.get("pipeline_names") or ["__default__"]
        if os.environ.get("DVC_STAGE"):
            # e.g. "fp16/report" in `dvc exp run -n fp16`, "evaluate@pruned" in `dvc repro`
            exp = os.environ.get("DVC_EXP_NAME")
            tags["mlflow.runName"] = f"{exp}/{os.environ['DVC_STAGE']}" if exp else os.environ["DVC_STAGE"]
        elif names == ["search"]:
            study = getattr(self._params.get("search"), "study_name", None)
            tags["mlflow.runName"] = f"search:{study}"
        elif names == ["__default__"]:
            # "__default__" tells a reader nothing; name the run by its recipe, as people compare them.
            methods = [getattr(self._params.get(k), "method", None) for k in ("prune", "distill", "quantize")]
            tags["mlflow.runName"] = "+".join(str(m) for m in methods if m is not None) or "__default__"
        mlflow.set_tags(tags)

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        if self._run() is None:
            return
        if node.name == "search":
            from shrinkflow import search

            self._listening.enter_context(search.listen(self._log_trial))
        elif node.name in CURVES:
            from shrinkflow.core import training

            self._listening.enter_context(training.listen(EpochMetrics(CURVES[node.name])))

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._listening.close()

    @hook_impl
    def on_node_error(self, node: Any) -> None:
        self._listening.close()

    def _log_trial(self, event: str, info: dict[str, Any]) -> None:
        """One child run per trial, written through the client: the parent stays the active run."""
        import mlflow
        from mlflow.entities import Metric, Param, RunStatus

        from shrinkflow import search

        parent = self._run()
        if event != "trial" or parent is None:
            return
        client = mlflow.MlflowClient()
        study = getattr(self._params.get("search"), "study_name", "")
        child = client.create_run(
            parent.info.experiment_id,
            run_name=f"{study}/trial-{info['number']}",
            tags={
                "mlflow.parentRunId": parent.info.run_id,
                "search.study": str(study),
                "search.trial": str(info["number"]),
                "search.state": info["state"],
                "search.worker": search.WORKER,
            },
        )
        now = int(1000 * time.time())
        metrics = [
            Metric(k, float(v), now, 0)
            for k, v in info.get("metrics", {}).items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        params = [Param(k, str(v)) for k, v in info.get("params", {}).items()]
        client.log_batch(child.info.run_id, metrics=metrics, params=params)
        status = RunStatus.FINISHED if info["state"] == "COMPLETE" else RunStatus.KILLED
        client.set_terminated(child.info.run_id, status=RunStatus.to_string(status))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        if self._run() is None:
            return
        import mlflow

        if dataset_name in FAMILY_OF_RECORD and isinstance(data, dict):
            stage = dataset_name.removesuffix("_record")
            tags = {f"method.{stage}": str(data.get("method"))}
            if data.get("plugin"):
                tags.update(_plugin_tags(f"method.{stage}", data["plugin"]))
            mlflow.set_tags(tags)
        elif dataset_name == TEACHER_RECORD and isinstance(data, dict):
            tags = {"method.train_teacher": str(data.get("method"))}
            if data.get("method") == "checkpoint":
                tags.update(
                    {
                        "teacher.checkpoint": str(data.get("checkpoint")),
                        "teacher.checkpoint_sha256": str(data.get("sha256")),
                    }
                )
            mlflow.set_tags(tags)
        elif dataset_name == "train_set" and getattr(getattr(data, "source", None), "tokenizer_json", None):
            # the tokenizer the token ids come from: the model is useless without it
            text = data.source.tokenizer_json
            mlflow.log_text(text, "tokenizer/tokenizer.json")
            mlflow.set_tag("data.tokenizer_sha256", hashlib.sha256(text.encode()).hexdigest())
        elif dataset_name.removesuffix("_metrics") in MODELS and isinstance(data, dict):
            self._log_metrics(dataset_name.removesuffix("_metrics"), data)
        elif dataset_name == "onnx_metrics" and isinstance(data, dict):
            self._log_metrics("onnx", data)
            mlflow.set_tags(
                {"onnx.format": str(data.get("format")), "onnx.qparams": str(data.get("qparams"))}
            )
        elif dataset_name == "metrics_json" and isinstance(data, dict):
            for stage, values in data.items():
                if isinstance(values, dict):
                    self._log_metrics(stage, values)
            # the report knows every stage's method, including skipped ones (a DVC report stage
            # sees no records being saved)
            mlflow.set_tags(
                {
                    f"method.{MAKER[stage]}": str(values.get("method"))
                    for stage, values in data.items()
                    if stage in MAKER and isinstance(values, dict)
                }
            )
        elif dataset_name == "search_summary" and isinstance(data, dict):
            chosen = data.get("chosen") or {}
            for split in ("val", "test"):
                self._log_metrics(f"search.chosen.{split}", chosen.get(split, {}))
            self._log_metrics("search", {"trials": data.get("trials"), "ran_here": data.get("ran_here")})
            if chosen:
                mlflow.set_tag("search.chosen_trial", str(chosen.get("number")))
        elif dataset_name == "deployment" and isinstance(data, dict):
            # the serving runtime per batch size, and every candidate's figures beside it
            mlflow.set_tags(
                {
                    "deploy.runtime": str(data.get("runtime")),
                    **{f"deploy.chosen.b{b}": str(r) for b, r in data.get("chosen", {}).items()},
                }
            )
            for row in data.get("candidates", []):
                keys = ("latency_ms", "throughput_sps", "speedup", "val_agreement", "test_agreement")
                self._log_metrics(f"deploy.{row['runtime']}.b{row['batch']}", {k: row.get(k) for k in keys})
        elif dataset_name == FINAL_MODEL:
            _log_model(data)
        elif dataset_name == GATES:
            # saved only when the gates passed or only warn; `compare --tag quality_gates=passed`
            outcome = _gates_outcome()
            if outcome:
                mlflow.set_tag(GATES, outcome)

    def _log_metrics(self, stage: str, values: dict[str, Any]) -> None:
        import mlflow

        numbers = {
            f"{stage}.{k}": float(v)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        new = {k: v for k, v in numbers.items() if k not in self._logged}
        if new:
            mlflow.log_metrics(new)
            self._logged.update(new)


def _gates_outcome() -> str | None:
    """``passed`` or ``failed: <stages>`` from the last run of the quality-gates suite."""
    from shrinkflow import validation

    try:
        results = [r for r in validation.active().results if r.suite == GATES]
    except validation.SuiteConfigError:  # validation not configured (no ValidationHook)
        return None
    if not results:
        return None
    last = results[-1]
    if last.success:
        return "passed"
    stages = sorted({label for f in last.failures for label in f.labels})
    return "failed: " + (", ".join(stages) if stages else "see Data Docs")


def _plugin_tags(prefix: str, info: dict[str, str]) -> dict[str, str]:
    return {prefix: info["name"], f"{prefix}.distribution": f"{info['distribution']}=={info['version']}"}


def _log_model(data: Any) -> None:
    """Log the artifact as an MLflow pyfunc model under ``model`` in the active run."""
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from shrinkflow import mlflow_model
    from shrinkflow.core import artifact

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *data.input_shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, data.num_classes))]),
    )
    import torch

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # The signature is explicit; an input example would only make MLflow run the model again.
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        path = Path(tmp) / "model.pt"
        artifact.save(data, path)
        mlflow.pyfunc.log_model(
            name="model",
            python_model=mlflow_model.__file__,
            artifacts={"artifact": str(path)},
            signature=signature,
            pip_requirements=[f"shrinkflow=={__version__}", f"torch=={torch.__version__.split('+')[0]}"],
        )
    log.info("logged the final model to MLflow run %s as 'model'", mlflow.active_run().info.run_id)
