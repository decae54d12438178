"""Built-in distillation methods."""
