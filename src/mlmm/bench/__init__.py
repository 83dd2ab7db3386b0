"""Benchmarks: methods × datasets × missingness × seeds, resumable, summarised from tidy tables."""

from mlmm.bench.runner import BenchConfig, comparison_table, run_bench

__all__ = ["BenchConfig", "comparison_table", "run_bench"]
