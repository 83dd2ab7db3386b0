"""Benchmarks: YAML specs, a resumable SQLite results store, local/Ray execution, reports."""

from mlmm.bench.execute import BenchOutcome, plan_jobs, plan_threads, run_benchmark
from mlmm.bench.spec import BenchSpec, RunConfig, builtin_suites, load_spec, load_suite, parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.bench.tables import comparison_table

__all__ = [
    "BenchOutcome",
    "BenchSpec",
    "ResultsStore",
    "RunConfig",
    "builtin_suites",
    "comparison_table",
    "load_spec",
    "load_suite",
    "parse_spec",
    "plan_jobs",
    "plan_threads",
    "run_benchmark",
]
