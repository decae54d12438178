"""One Kedro pipeline per stage: ``nodes.py`` (thin) + ``pipeline.py`` (wiring)."""
