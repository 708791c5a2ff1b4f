"""Experiments: configs, the `metaal` command, training and evaluation pipelines, benchmarks."""
