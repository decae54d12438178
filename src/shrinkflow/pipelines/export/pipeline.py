from kedro.pipeline import Pipeline, node

from .nodes import export_onnx


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                export_onnx,
                ["quantized_model", "train_set", "test_set", "params:export", "params:evaluate"],
                ["onnx_model", "onnx_metrics"],
                name="export_onnx",
            )
        ]
    )
