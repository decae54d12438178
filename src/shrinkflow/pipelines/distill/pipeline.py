from kedro.pipeline import Pipeline, node

from shrinkflow.curves import history_table

from .nodes import distill_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                distill_model,
                ["teacher_model", "pruned_model", "train_set", "val_set", "params:distill", "params:runtime"],
                ["distilled_model", "distill_record"],
                name="distill",
            ),
            # its per-epoch curves: the DVC plot file (MLflow gets them live, as step metrics)
            node(history_table, "distill_record", "distill_history", name="distill_history"),
        ]
    )
