"""The command-line edge: ``lddgan`` (``cli``), the benchmark, the recipes that made the shipped model and the
parity check against the official fixtures. Nothing in the library imports this package."""
