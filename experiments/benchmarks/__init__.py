"""Benchmarks: scripts that print measured figures (never timed unit tests)."""
