"""Benchmarks (python -m pyvs.bench.<name>)."""
