from kedro.pipeline import Pipeline, node

from .nodes import search_recipes


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                search_recipes,
                [
                    "teacher_model",
                    "train_set",
                    "val_set",
                    "test_set",
                    "params:search",
                    "params:prune",
                    "params:distill",
                    "params:quantize",
                    "params:evaluate",
                    "params:export",
                    "params:seed",
                ],
                ["search_trials", "search_front_plot", "search_best_recipe", "search_summary"],
                name="search",
            )
        ]
    )
