"""Project settings."""

from shrinkflow.hooks import SeedHook

HOOKS = (SeedHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
