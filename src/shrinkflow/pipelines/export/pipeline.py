from kedro.pipeline import Pipeline, node

from .nodes import export_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                export_model,
                [
                    "quantized_model",
                    "teacher_model",
                    "train_set",
                    "val_set",
                    "test_set",
                    "params:export",
                    "params:evaluate",
                ],
                ["onnx_model", "onnx_metrics", "deployed_model", "deployment"],
                name="export_onnx",
            )
        ]
    )
