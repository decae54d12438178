from kedro.pipeline import Pipeline, node

from .nodes import quantize_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                quantize_model,
                [
                    "distilled_model",
                    "teacher_model",
                    "train_set",
                    "val_set",
                    "params:quantize",
                    "params:runtime",
                ],
                ["quantized_model", "quantize_record"],
                name="quantize",
            )
        ]
    )
