from kedro.pipeline import Pipeline, node

from .nodes import distill_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                distill_model,
                ["teacher_model", "pruned_model", "train_set", "val_set", "params:distill", "params:runtime"],
                ["distilled_model", "distill_record"],
                name="distill",
            )
        ]
    )
