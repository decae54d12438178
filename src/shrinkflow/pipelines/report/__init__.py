"""All stages in one table: metrics.json, report.md, report.csv."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
