"""Project settings."""

from shrinkflow.config_loader import ShrinkflowConfigLoader
from shrinkflow.hooks import (
    DistributedHook,
    MlflowParamsHook,
    RunLockHook,
    SeedHook,
    TrackingHook,
    ValidationHook,
)
from shrinkflow.preflight import PreflightHook
from shrinkflow.tracking import artifact_location, tracking_uri

# kedro-mlflow's hook opens and closes one MLflow run per `kedro run` and logs the parameters; it is
# registered here as MlflowParamsHook (which hands it plain dicts) instead of through its entry
# point. TrackingHook adds per-stage metrics, the final model, git and plugin tags. RunLockHook keeps
# a second run from writing the same artifacts at once; ValidationHook gives the catalog's Great
# Expectations validators their suites (conf/<env>/gx_suites.yml) and renders the Data Docs.
# DistributedHook joins a torchrun process group and lets only rank 0 write and record.
# PreflightHook builds the configured models on the data's shape before any node (registered after
# RunLockHook so that pluggy calls it first: a model that does not fit leaves data/ untouched).
HOOKS = (
    DistributedHook(),
    RunLockHook(),
    SeedHook(),
    MlflowParamsHook(),
    TrackingHook(),
    ValidationHook(),
    PreflightHook(),
)
# The distribution name as installed metadata spells it (kedro compares it verbatim).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")

# --params overrides single keys in every environment (Kedro's loader lets an environment without a
# stage's parameters file drop that stage's base block; see config_loader.py).
CONFIG_LOADER_CLASS = ShrinkflowConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {"gx_suites": ["gx_suites*", "gx_suites*/**"]},
    # an environment overrides single keys of a suite (e.g. quality_gates.on_failure: warn)
    "merge_strategy": {"gx_suites": "soft"},
    "custom_resolvers": {
        "tracking_uri": lambda: tracking_uri(),
        "mlflow_artifact_location": lambda: artifact_location(),
    },
}
