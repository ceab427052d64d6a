"""Catalogs of plausible wrong implementations, one module per chapter."""
