from kedro.pipeline import Pipeline, node

from .nodes import split_data


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            node(
                split_data,
                ["raw_data", "params:data", "params:seed"],
                ["train_set", "val_set", "test_set", "split_summary"],
                name="split_data",
            )
        ]
    )
