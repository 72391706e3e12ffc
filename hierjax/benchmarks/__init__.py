"""Benchmark scripts; each writes its table into BENCHMARKS.md."""
