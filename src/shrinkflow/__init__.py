"""shrinkflow: make trained neural networks small and fast, reproducibly."""

__version__ = "0.1.0"
