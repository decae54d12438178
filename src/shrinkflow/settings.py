"""Project settings."""

from shrinkflow.hooks import MlflowParamsHook, SeedHook, TrackingHook
from shrinkflow.tracking import artifact_location, tracking_uri

# kedro-mlflow's hook opens and closes one MLflow run per `kedro run` and logs the parameters; it is
# registered here as MlflowParamsHook (which hands it plain dicts) instead of through its entry
# point. TrackingHook adds per-stage metrics, the final model, git and plugin tags.
HOOKS = (SeedHook(), MlflowParamsHook(), TrackingHook())
# The distribution name as installed metadata spells it (kedro compares it verbatim).
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {
        "tracking_uri": lambda: tracking_uri(),
        "mlflow_artifact_location": lambda: artifact_location(),
    },
}
