from kedro.pipeline import Pipeline, node

from shrinkflow.curves import history_table

from .nodes import prune_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                prune_model,
                ["teacher_model", "train_set", "val_set", "params:prune", "params:runtime"],
                ["pruned_model", "prune_record"],
                name="prune",
            ),
            # its per-epoch curves: the DVC plot file (MLflow gets them live, as step metrics)
            node(history_table, "prune_record", "prune_history", name="prune_history"),
        ]
    )
