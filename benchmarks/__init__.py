"""Benchmarks behind the make bench-* targets; each writes .work/bench/NAME.json and BENCHMARKS.md."""
