"""Typed stage configurations and the stage logic the Kedro nodes call.

Each ``conf/base/parameters_<stage>.yml`` block is built into one of these dataclasses by Kedro
before any node runs (typed ``params:`` inputs); a bad value fails there with the dotted key, the
value and the allowed range, and an unknown method name fails listing the registered ones.
This module imports no kedro: the same functions run from a notebook or a test.
"""

from __future__ import annotations

import copy
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar

from shrinkflow import plugins
from shrinkflow.core.artifact import (
    Checkpoint,
    ModelArtifact,
    load_pretrained,
    load_state_dict,
    read_checkpoint,
)
from shrinkflow.core.config import Config, ConfigError, check_choice, check_range, nested
from shrinkflow.core.data import RawData, Split, check_channels, modality, split_data
from shrinkflow.core.method import Context
from shrinkflow.core.models import ModelChoice, ModelSpec
from shrinkflow.core.runtime import CPU, PRECISIONS, Runtime, RuntimeConfig
from shrinkflow.core.sparsity import frozen_zeros
from shrinkflow.core.tables import Standardized, fit_standardization
from shrinkflow.core.training import TrainConfig, fit
from shrinkflow.core.transforms import build_steps

__all__ = [
    "MAKER",
    "MODELS",
    "DataStage",
    "DistillStage",
    "GateStage",
    "MethodStage",
    "PruneStage",
    "QuantizeStage",
    "TeacherStage",
    "build",
    "distill",
    "run_method",
    "split",
    "train_or_load_teacher",
]

NONE = "none"


class _Stage(Config):
    """Top-level stage config: errors carry the stage's parameter key as prefix."""

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        try:
            self.validate()
        except ConfigError as exc:
            raise exc.under(self.KEY) from None

    def validate(self) -> None:
        raise NotImplementedError


class _Trains:
    """A stage that trains: ``device`` / ``precision`` override the run-level ``runtime`` block
    for this stage (null: the run's)."""

    KEY: ClassVar[str]
    device: str | None
    precision: str | None

    def check_runtime(self) -> None:
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigError("device", self.device, "null, auto, cpu, cuda, cuda:N or mps")
        if self.precision is not None:
            check_choice("precision", self.precision, list(PRECISIONS))

    def runtime(self, run: RuntimeConfig | None) -> Runtime:
        """This stage's resolved runtime (the CPU in fp32 when no ``runtime`` block is given)."""
        if run is None and self.device is None and self.precision is None:
            return CPU
        return (run or RuntimeConfig()).resolve(self.device, self.precision, key=self.KEY)


@dataclass
class DataStage(_Stage):
    KEY: ClassVar[str] = "data"
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    channels: int | None = None
    #: image transform steps (shrinkflow.core.transforms); augmentation on the training split only
    transforms: list[Any] = field(default_factory=list)

    def validate(self) -> None:
        check_range("val_fraction", self.val_fraction, 0.0, 0.5, low_open=True)
        check_range("test_fraction", self.test_fraction, 0.0, 0.5, low_open=True)
        if self.channels is not None:
            check_range("channels", self.channels, 1, 64, integer=True)
        build_steps(self.transforms, "transforms")


@dataclass
class TeacherStage(_Trains, _Stage):
    KEY: ClassVar[str] = "train_teacher"
    model: ModelChoice | dict[str, Any] = field(default_factory=ModelChoice)
    train: TrainConfig | dict[str, Any] = field(default_factory=TrainConfig)
    device: str | None = None
    precision: str | None = None

    def validate(self) -> None:
        self.check_runtime()
        self.model = nested(ModelChoice, self.model, "model")
        self.train = nested(TrainConfig, self.train, "train")


@dataclass
class MethodStage(_Trains, _Stage):
    """``method``: a registered plugin name or ``none``.

    ``options`` maps method names to their configs, so settings for several methods can sit side
    by side and ``--params prune.method=other`` switches without editing YAML. Only the chosen
    method's block is validated (and a method with no block runs with its defaults).
    """

    FAMILY: ClassVar[str] = ""
    method: str = NONE
    options: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None
    method_config: Config | None = field(default=None, init=False, repr=False)

    def validate(self) -> None:
        self.check_runtime()
        known = plugins.available(self.FAMILY)
        if not isinstance(self.method, str):
            raise ConfigError("method", self.method, f"a name from {[NONE, *known]}")
        if not isinstance(self.options, dict):
            raise ConfigError("options", self.options, "a mapping {method name: {option: value}}")
        for name, block in self.options.items():
            if name not in known and not isinstance(block, dict):
                raise ConfigError(
                    f"options.{name}", block, f"a block named after a registered method {known}"
                )
        if self.method != NONE:
            try:
                plugin = plugins.load(self.FAMILY, self.method)
            except plugins.PluginError as exc:
                raise ConfigError("method", self.method, f"'{NONE}' or a registered name ({exc})") from None
            self.method_config = nested(
                plugin.config_cls, self.options.get(self.method), f"options.{self.method}"
            )


@dataclass
class PruneStage(MethodStage):
    KEY: ClassVar[str] = "prune"
    FAMILY: ClassVar[str] = plugins.PRUNERS
    finetune: TrainConfig | dict[str, Any] = field(default_factory=lambda: TrainConfig(epochs=0))

    def validate(self) -> None:
        super().validate()
        self.finetune = nested(TrainConfig, self.finetune, "finetune")


@dataclass
class DistillStage(MethodStage):
    """``student``: ``pruned`` (recover the pruned model, its zeros kept) or a model spec."""

    KEY: ClassVar[str] = "distill"
    FAMILY: ClassVar[str] = plugins.DISTILLERS
    student: str | ModelChoice | dict[str, Any] = "pruned"
    train: TrainConfig | dict[str, Any] = field(default_factory=TrainConfig)

    def validate(self) -> None:
        super().validate()
        if isinstance(self.student, str):
            if self.student != "pruned":
                raise ConfigError(
                    "student", self.student, "'pruned' or a model {name: ..., kwargs: {<name>: {...}}}"
                )
        else:
            self.student = nested(ModelChoice, self.student, "student")
            if self.method == NONE:
                raise ConfigError(
                    "method", NONE, "a distiller when a separate student architecture is declared"
                )
        self.train = nested(TrainConfig, self.train, "train")


@dataclass
class QuantizeStage(MethodStage):
    """``finetune``: training for methods that train (QAT, weight-sharing centroid fine-tuning);
    the teacher is in their context, for soft targets. Post-training methods ignore it."""

    KEY: ClassVar[str] = "quantize"
    FAMILY: ClassVar[str] = plugins.QUANTIZERS
    finetune: TrainConfig | dict[str, Any] = field(default_factory=lambda: TrainConfig(epochs=0))

    def validate(self) -> None:
        super().validate()
        self.finetune = nested(TrainConfig, self.finetune, "finetune")


@dataclass
class GateStage(_Stage):
    """Quality gates on the evaluation, checked by the ``quality_gates`` suite (gx_suites.yml).

    ``max_accuracy_drop``: per stage, teacher accuracy minus the stage's (a fraction: 0.01 is one
    point); the other bounds apply to the final model (``final``) and ``null`` leaves them unchecked.
    """

    KEY: ClassVar[str] = "gates"
    max_accuracy_drop: float = 0.02
    final: str = "quantized"
    min_compression_ratio: float | None = None
    max_packed_bytes: int | None = None
    min_sparsity: float | None = None

    def validate(self) -> None:
        check_range("max_accuracy_drop", self.max_accuracy_drop, 0.0, 1.0)
        check_choice("final", self.final, MODELS)
        if self.min_compression_ratio is not None:
            check_range("min_compression_ratio", self.min_compression_ratio, 0.0, low_open=True)
        if self.max_packed_bytes is not None:
            check_range("max_packed_bytes", self.max_packed_bytes, 0, low_open=True, integer=True)
        if self.min_sparsity is not None:
            check_range("min_sparsity", self.min_sparsity, 0.0, 1.0)


def split(raw: RawData, cfg: DataStage, seed: int) -> tuple[Split, Split, Split]:
    check_range("seed", seed, 0, 2**32 - 1, integer=True)
    train, val, test = split_data(
        raw, cfg.val_fraction, cfg.test_fraction, seed, transforms=cfg.transforms, channels=cfg.channels
    )
    check_channels(cfg.channels, val.input_shape)
    return train, val, test


def _weights_target(model: Any, state: Any) -> Any:
    """Where a user's weights go: the whole model, or inside the standardization wrapper when the
    file was saved from the bare architecture (no ``standardize.*`` / ``model.*`` keys)."""
    if isinstance(model, Standardized) and not any(k.startswith(("standardize.", "model.")) for k in state):
        return model.model
    return model


def _build_fitted(spec: ModelSpec, train: Split) -> ModelArtifact:
    """``spec`` built for ``train``'s shape and classes; a standardization fitted on ``train``."""
    artifact = ModelArtifact.build(spec, train.input_shape, train.num_classes)
    fit_standardization(artifact.model, train.for_eval())
    return artifact


def build(choice: ModelChoice, train: Split) -> ModelArtifact:
    """A fresh model for ``train``'s input shape and classes, standardized on ``train`` when the
    choice says so (``auto``: table rows), with ``choice.pretrained`` loaded (statistics saved
    with the weights win over the fitted ones)."""
    artifact = _build_fitted(choice.spec_for(train.input_shape, modality(train)), train)
    if choice.pretrained is not None:
        state = read_checkpoint(choice.pretrained).state_dict
        load_pretrained(_weights_target(artifact.model, state), choice.pretrained)
    return artifact


def train_or_load_teacher(
    train: Split,
    val: Split,
    checkpoint: Checkpoint | None,
    cfg: TeacherStage,
    run: RuntimeConfig | None = None,
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Build the teacher; load the user's checkpoint if one is given, else train it. The record
    says which (``method``: ``train`` or ``checkpoint``, with the file's path and sha256)."""
    assert isinstance(cfg.model, ModelChoice) and isinstance(cfg.train, TrainConfig)
    spec = cfg.model.spec_for(train.input_shape, modality(train))
    if checkpoint is not None:
        if cfg.model.standardize == "auto":  # standardize only if the file was trained so
            spec = replace(spec, standardize="standardize.mean" in checkpoint.state_dict)
        artifact = _build_fitted(spec, train)
        target = _weights_target(artifact.model, checkpoint.state_dict)
        load_state_dict(target, checkpoint.state_dict, f"teacher checkpoint {checkpoint.path}")
        how = {"method": "checkpoint", "checkpoint": checkpoint.path, "sha256": checkpoint.sha256}
    else:
        artifact = build(cfg.model, train)
        runtime = cfg.runtime(run)
        train, val = _loading(train, val, runtime)
        history = fit(artifact.model, train, cfg.train, val=val, label="teacher", runtime=runtime)
        how = {"method": "train", "config": cfg.train.to_dict(), "history": [vars(h) for h in history]}
        if cfg.model.pretrained is not None:
            how["pretrained"] = cfg.model.pretrained
    record: dict[str, Any] = {"stage": TeacherStage.KEY, "status": "done", "model": spec.to_dict(), **how}
    artifact.model.eval()
    return artifact, record


def run_method(
    stage: MethodStage,
    artifact: ModelArtifact,
    train: Split,
    val: Split,
    *,
    train_cfg: TrainConfig | None = None,
    teacher: ModelArtifact | None = None,
    keep_sparsity: bool = False,
    run: RuntimeConfig | None = None,
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Apply the stage's method to a copy of ``artifact``; ``none`` passes it through unchanged.

    Returns the new artifact and a record of what ran (method, config, plugin distribution and
    version, training history) for the report and the run tracker.
    """
    record: dict[str, Any] = {"stage": stage.KEY, "method": stage.method}
    if stage.method == NONE:
        return artifact, {**record, "status": "skipped"}
    plugin = plugins.load(stage.FAMILY, stage.method)
    cfg = stage.method_config
    assert cfg is not None
    train_cfg = train_cfg or TrainConfig(epochs=0)
    runtime = stage.runtime(run)
    train, val = _loading(train, val, runtime)
    ctx = Context(
        train,
        val,
        fit=partial(fit, train=train, cfg=train_cfg, val=val, runtime=runtime),
        teacher=None if teacher is None else teacher.model,
        train_cfg=train_cfg,
        runtime=runtime,
    )
    model = copy.deepcopy(artifact.model)
    with frozen_zeros(model) if keep_sparsity else nullcontext():
        model = plugin.apply(model, cfg, ctx)
    model.eval()
    structure = plugin.structure(model) if plugin.structure is not None else None
    record.update(
        status="done",
        config=cfg.to_dict(),
        plugin=plugins.info(stage.FAMILY, stage.method).to_dict(),
        history=[vars(h) for h in ctx.history],
    )
    return artifact.with_step(model, stage.FAMILY, stage.method, cfg.to_dict(), structure), record


def distill(
    teacher: ModelArtifact,
    pruned: ModelArtifact,
    train: Split,
    val: Split,
    cfg: DistillStage,
    run: RuntimeConfig | None = None,
) -> tuple[ModelArtifact, dict[str, Any]]:
    """Distil into the pruned model (zeros kept) or into a freshly built student architecture."""
    assert isinstance(cfg.train, TrainConfig)
    student = build(cfg.student, train) if isinstance(cfg.student, ModelChoice) else pruned
    return run_method(
        cfg,
        student,
        train,
        val,
        train_cfg=cfg.train,
        teacher=teacher,
        keep_sparsity=student is pruned,
        run=run,
    )


def _loading(train: Split, val: Split, runtime: Runtime) -> tuple[Split, Split]:
    """The splits read with the runtime's loader settings (workers, pinned memory)."""
    return replace(train, loader=runtime.loader, _cache={}), replace(val, loader=runtime.loader, _cache={})


#: The models the DAG produces, in order; each one is evaluated and reported as ``<model>_metrics``.
MODELS = ("teacher", "pruned", "distilled", "quantized")
#: The stage (its parameter key and ``<key>_record``) that makes each compressed model.
MAKER = {
    "teacher": TeacherStage.KEY,
    "pruned": PruneStage.KEY,
    "distilled": DistillStage.KEY,
    "quantized": QuantizeStage.KEY,
}
