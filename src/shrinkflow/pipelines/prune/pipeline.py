from kedro.pipeline import Pipeline, node

from .nodes import prune_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                prune_model,
                ["teacher_model", "train_set", "val_set", "params:prune", "params:runtime"],
                ["pruned_model", "prune_record"],
                name="prune",
            )
        ]
    )
