"""The torch-only compression library: data, models, training, measurement, artifacts.

Imports neither kedro nor mlflow, so it is usable and testable on its own.
"""
