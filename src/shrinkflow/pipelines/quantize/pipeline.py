from kedro.pipeline import Pipeline, node

from shrinkflow.curves import history_table

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
            ),
            # its per-epoch curves: the DVC plot file (MLflow gets them live, as step metrics)
            node(history_table, "quantize_record", "quantize_history", name="quantize_history"),
        ]
    )
