"""Seeding: every RNG seeded before each node from the ``seed`` parameter and the node's name."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl

from shrinkflow.core.training import node_seed, seed_everything


class SeedHook:
    """Seed every RNG before each node from the ``seed`` parameter and the node's name.

    Seeding per node (not once per run) makes each node's result independent of which other
    nodes ran before it, so ``kedro run --pipelines prune`` reproduces the full run's pruned model.
    """

    def __init__(self) -> None:
        self._seed = 0

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # Reading params runs Kedro's typed-parameter validation now, before any node.
        self._seed = int(context.params.get("seed", 0))

    @hook_impl
    def before_node_run(self, node: Any) -> None:
        seed_everything(node_seed(self._seed, node.name))
