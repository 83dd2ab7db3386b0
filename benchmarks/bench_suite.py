"""The benchmark runner's own cost: the quick suite's wall time, and the runner's overhead.

Targets (issue "Benchmark suite"): the quick suite (`mlmm bench`) under 5 minutes on 2 CPU
cores; the runner (spec expansion, store, claims, process handling, report) costs under 10%
over training the same runs in a plain loop.

Timings, in one process each, on the same machine, one after the other:
* `plain`: a Python loop calling `mlmm.run_experiment` for every run of the quick suite, with
  the same threads per process as the runner uses;
* `runner`: `mlmm bench` (quick suite, `--jobs 1`, `--no-report`) into a new store: spec
  expansion, store writes, claims, progress display and the summary table;
* `report`: `mlmm report` on that store (the HTML report `mlmm bench` writes at its end);
* `runner-jobs2`: `mlmm bench` with `--jobs 2` (two workers, one thread each), report included;
* `rerun`: `mlmm bench` on the finished store (every run skipped), report included.
The runner's overhead is `runner / plain - 1`, measured in the same run of this script; the
report's cost is given beside it.

Run:  python benchmarks/bench_suite.py [--out benchmarks/results]
Writes <out>/bench_suite.json and <out>/bench_suite.md with the machine it ran on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

PLAIN = """
import sys, time
from mlmm.bench import load_suite
from mlmm.bench.execute import pin_threads, plan_threads
from mlmm.experiment import run_experiment
pin_threads(plan_threads(1))
t0 = time.perf_counter()
for run in load_suite("quick").runs():
    run_experiment(run.dataset, run.method, method_params=run.method_params,
                   dataset_params=run.dataset_params, missing=run.train_missing,
                   test_missing=list(run.test_missing), seed=run.seed,
                   test_size=run.test_size, val_size=run.val_size,
                   trainer={**run.budget, "progress": False})
print(time.perf_counter() - t0)
"""


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        plain = timed([sys.executable, "-c", PLAIN])
        bench = [sys.executable, "-m", "mlmm.cli", "bench", "quick"]
        runner = timed([*bench, "--store", f"{tmp}/jobs1.db", "--jobs", "1", "--no-report"])
        report = timed([sys.executable, "-m", "mlmm.cli", "report", f"{tmp}/jobs1.db"])
        runner2 = timed([*bench, "--store", f"{tmp}/jobs2.db", "--jobs", "2"])
        rerun = timed([*bench, "--store", f"{tmp}/jobs1.db", "--jobs", "1"])
    table = pd.DataFrame(
        [
            {"what": "plain loop of run_experiment (1 process, 2 threads)", "seconds": plain},
            {"what": "mlmm bench quick --jobs 1 (2 threads), --no-report", "seconds": runner},
            {"what": "mlmm report on that store (process start included)", "seconds": report},
            {
                "what": "mlmm bench quick --jobs 2 (1 thread each), report included",
                "seconds": runner2,
            },
            {"what": "mlmm bench quick rerun on a finished store (all skipped)", "seconds": rerun},
        ]
    ).round(1)
    checks = {
        "quick suite wall seconds (--jobs 1, report included)": runner + report,
        "quick suite wall seconds (--jobs 2)": runner2,
        "runner overhead over the plain loop (jobs 1, fraction)": runner / plain - 1,
        "report share of the --jobs 1 wall time (fraction)": report / (runner + report),
        "quick suite under 5 minutes": runner + report < 300 and runner2 < 300,
        "runner overhead under 10%": runner / plain - 1 < 0.10,
    }
    record = {
        "command": "python benchmarks/bench_suite.py",
        "machine": machine(),
        "wall_seconds": time.perf_counter() - t_start,
        "timings": table.to_dict(orient="records"),
        "checks": checks,
    }
    write_report(
        out,
        "bench_suite",
        "Benchmark runner cost",
        "Each timing is a fresh process (imports included), run one after the other on the same "
        "machine; the plain loop trains exactly the quick suite's runs.",
        record,
        table,
        checks,
    )


if __name__ == "__main__":
    main()
