from kedro.pipeline import Pipeline, node

from .nodes import train_teacher


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                train_teacher,
                ["train_set", "val_set", "teacher_checkpoint", "params:train_teacher", "params:runtime"],
                ["teacher_model", "train_teacher_record"],
                name="train_teacher",
            )
        ]
    )
