from kedro.pipeline import Pipeline, node

from .nodes import quality_gates, report


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                quality_gates,
                [
                    "teacher_metrics",
                    "pruned_metrics",
                    "distilled_metrics",
                    "quantized_metrics",
                    "params:gates",
                ],
                "quality_gates",
                name="quality_gates",
            ),
            node(
                report,
                [
                    "teacher_metrics",
                    "pruned_metrics",
                    "distilled_metrics",
                    "quantized_metrics",
                    "train_teacher_record",
                    "prune_record",
                    "distill_record",
                    "quantize_record",
                    "quality_gates",
                    "onnx_metrics",
                    "deployment",
                ],
                [
                    "metrics_json",
                    "report_md",
                    "report_csv",
                    "accuracy_size_plot",
                    "latency_plot",
                    "sparsity_plot",
                ],
                name="report",
            ),
        ]
    )
