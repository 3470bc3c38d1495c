"""Benchmarks, run by ``make bench-…``: each measures against a baseline run in the same process tree."""
