from kedro.pipeline import Pipeline, node

from .nodes import report


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                report,
                [
                    "teacher_metrics",
                    "pruned_metrics",
                    "distilled_metrics",
                    "quantized_metrics",
                    "prune_record",
                    "distill_record",
                    "quantize_record",
                ],
                ["metrics_json", "report_md", "report_csv", "accuracy_size_plot"],
                name="report",
            )
        ]
    )
