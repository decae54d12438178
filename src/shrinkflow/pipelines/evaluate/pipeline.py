from kedro.pipeline import Pipeline, node

from shrinkflow.stages import MODELS

from .nodes import evaluate_model


def create_pipeline(**kwargs: object) -> Pipeline:
    template = Pipeline(
        [
            node(
                evaluate_model,
                ["model", "teacher", "test_set", "params:evaluate", "params:runtime"],
                "metrics",
                name="evaluate",
            )
        ]
    )
    return sum(
        (
            Pipeline(
                template,
                namespace=stage,
                inputs={"model": f"{stage}_model", "teacher": "teacher_model", "test_set": "test_set"},
                outputs={"metrics": f"{stage}_metrics"},
                parameters={"params:evaluate": "params:evaluate", "params:runtime": "params:runtime"},
            )
            for stage in MODELS
        ),
        Pipeline([]),
    )
