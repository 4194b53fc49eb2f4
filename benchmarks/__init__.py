"""Benchmark harnesses (not part of the installed package): `python -m benchmarks.bench`."""
