from kedro.pipeline import Pipeline, node

from shrinkflow.curves import history_table

from .nodes import train_teacher


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                train_teacher,
                ["train_set", "val_set", "teacher_checkpoint", "params:train_teacher", "params:runtime"],
                ["teacher_model", "train_teacher_record"],
                name="train_teacher",
            ),
            # its per-epoch curves: the DVC plot file (MLflow gets them live, as step metrics)
            node(
                history_table, "train_teacher_record", "train_teacher_history", name="train_teacher_history"
            ),
        ]
    )
