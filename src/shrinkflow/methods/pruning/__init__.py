"""Built-in pruning methods."""
