"""Built-in low-rank factorization methods (a structural reduction served by the prune stage)."""
