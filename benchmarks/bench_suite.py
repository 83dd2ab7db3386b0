"""The benchmark runner's own cost: the quick suite's wall time, the runner's overhead, and
whether the rows depend on how the runs were spread over the cores.

Targets: issue "Benchmark suite" (the quick suite under 5 minutes on 2 CPU cores; the runner
costs under 10% over a plain loop of the same runs) and issue 10 (README command 1, install
included, within 3 minutes on an idle 2-core machine; identical rows under load).

Each step is a fresh process, one after the other on the same machine; `OMP_NUM_THREADS` and
`MKL_NUM_THREADS` are removed from its environment, as on a fresh shell running README
command 1. Per step: wall seconds, CPU seconds (user + system, its worker processes
included), the peak memory of its largest process, and the 1-minute load average before and
after (other processes on the machine show there: compare steps as ratios within one run of
this script).

* `default`: `mlmm bench` as README command 1 runs it (the quick suite, the default jobs and
  threads, report included) into a new store;
* `jobs1`: `mlmm bench quick --jobs 1 --threads 1 --no-report` into a new store;
* `report`: `mlmm report` on that store (the HTML report `mlmm bench` writes at its end);
* `threads2`: `mlmm bench quick --jobs 1 --threads 2 --no-report`, the default before this
  change on a 2-core machine, into a new store;
* `rerun`: `mlmm bench` on the finished `default` store (every run skipped), report included;
* `plain`: a Python loop calling `mlmm.run_experiment` for every run of the quick suite on one
  thread, as the runner gives each run by default.

Checks compare the stores' result rows: `default` against `jobs1` (the same threads per run,
other jobs), and `threads2` against `jobs1` (other threads per run).

Run:  python benchmarks/bench_suite.py [--out benchmarks/results] [--steps default,jobs1,...]
      [--methods hemis,...] [--name bench_suite]
Writes <out>/<name>.json and <out>/<name>.md with the machine it ran on, after every step.
`--report-only` rewrites them from the JSON (its machine record and row comparisons kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write_report  # noqa: E402

from mlmm.bench.execute import available_cores, available_memory  # noqa: E402
from mlmm.bench.store import ResultsStore  # noqa: E402

STEPS = ("default", "jobs1", "report", "threads2", "rerun", "plain")
KEY = ["run_key", "method", "condition", "scope", "subset", "metric"]

PLAIN = """
import sys
from mlmm.bench import load_suite
from mlmm.bench.execute import pin_threads
from mlmm.experiment import run_experiment
pin_threads(1)
methods = sys.argv[1:]
for run in load_suite("quick").runs():
    if methods and run.method not in methods:
        continue
    run_experiment(run.dataset, run.method, method_params=run.method_params,
                   dataset_params=run.dataset_params, missing=run.train_missing,
                   test_missing=list(run.test_missing), seed=run.seed,
                   test_size=run.test_size, val_size=run.val_size,
                   trainer={**run.budget, "progress": False})
"""


def timed(command: list[str]) -> dict:
    """Wall and CPU seconds, peak memory and load of ``command`` run to its end."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)  # the process and its reaped workers
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed ({proc.returncode}):\n{output[-3000:]}")
    plan = [line for line in output.splitlines() if "job(s)" in line]
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "load_1m_before": load_before,
        "load_1m_after": os.getloadavg()[0],
        "plan": plan[0].strip() if plan else "",
    }


def rows(path: Path) -> pd.DataFrame:
    with ResultsStore(path) as db:
        return db.results().sort_values(KEY).reset_index(drop=True)


def compare(a: Path, b: Path) -> dict:
    """How the result rows of two stores of the same runs differ."""
    left, right = rows(a), rows(b)
    same_keys = left[KEY].equals(right[KEY])
    if not same_keys:
        return {"same_rows": False, "same_keys": False}
    diff = (left.value - right.value).abs()
    accuracy = left.metric.eq("accuracy") & left.scope.eq("overall")
    with ResultsStore(a) as db_a, ResultsStore(b) as db_b:
        epochs = db_a.runs().set_index("run_key").epochs
        other = db_b.runs().set_index("run_key").epochs.reindex(epochs.index)
    return {
        "same_rows": bool(left.value.equals(right.value)),
        "same_keys": True,
        "rows": len(left),
        "rows_differing": int((diff > 0).sum()),
        "max_abs_difference": float(diff.max()),
        "max_abs_accuracy_difference_points": float(100 * diff[accuracy].max()),
        "runs_with_other_epochs": int((epochs != other).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated, in order")
    parser.add_argument(
        "--methods",
        default="",
        help="only these methods of the quick suite (comma-separated), in every step",
    )
    parser.add_argument("--name", default="bench_suite", help="<out>/<name>.{json,md}")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite <out>/<name>.{json,md} from the steps and row comparisons that "
        "<name>.json holds (its machine record kept)",
    )
    args = parser.parse_args()
    if args.report_only:
        record = json.loads((Path(args.out) / f"{args.name}.json").read_text())
        rows_checks = {k: v for k, v in record["checks"].items() if k.startswith("rows:")}
        report(
            Path(args.out),
            record["command"],
            record["steps"],
            rows_checks,
            record["wall_seconds"],
            args.name,
            record["machine"],
        )
        return
    steps = args.steps.split(",")
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise SystemExit(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    command = "python benchmarks/bench_suite.py"
    if steps != list(STEPS):
        command += f" --steps {args.steps}"
    methods = [m for m in args.methods.split(",") if m]
    narrow = [part for m in methods for part in ("--method", m)]
    if methods:
        command += f" --methods {args.methods}"
    if args.name != "bench_suite":
        command += f" --name {args.name}"
    t_start = time.perf_counter()
    bench = [sys.executable, "-m", "mlmm.cli", "bench", "quick", *narrow]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = {s: Path(tmp) / f"{s}.db" for s in ("default", "jobs1", "threads2")}
        commands = {
            "default": [*bench, "--store", str(stores["default"])],
            "jobs1": [*bench, "--store", str(stores["jobs1"]), "--jobs", "1"]
            + ["--threads", "1", "--no-report"],
            "report": [sys.executable, "-m", "mlmm.cli", "report", str(stores["jobs1"])],
            "threads2": [*bench, "--store", str(stores["threads2"]), "--jobs", "1"]
            + ["--threads", "2", "--no-report"],
            "rerun": [*bench, "--store", str(stores["default"])],
            "plain": [sys.executable, "-c", PLAIN, *methods],
        }
        for step in steps:
            print(f"{step}: {' '.join(commands[step][1:])}", flush=True)
            results[step] = timed(commands[step])
            print(f"  {results[step]}", flush=True)
            rows_checks = {}
            if "default" in results and "jobs1" in results:
                rows_checks["rows: default vs --jobs 1 --threads 1"] = compare(
                    stores["default"], stores["jobs1"]
                )
            if "threads2" in results and "jobs1" in results:
                rows_checks["rows: --threads 2 vs --threads 1 (both --jobs 1)"] = compare(
                    stores["threads2"], stores["jobs1"]
                )
            # written after every step: a long run stopped midway keeps what it measured
            seconds = time.perf_counter() - t_start
            report(Path(args.out), command, results, rows_checks, seconds, args.name)


def report(
    out: Path,
    command: str,
    results: dict,
    rows_checks: dict,
    seconds: float,
    name: str = "bench_suite",
    machine_record: dict | None = None,
) -> None:
    """Write the figures measured so far, and the checks they allow."""
    checks: dict[str, object] = dict(rows_checks)
    labels = {
        "default": "mlmm bench (README command 1 after the install: default plan, report)",
        "jobs1": "mlmm bench quick --jobs 1 --threads 1 --no-report",
        "report": "mlmm report on the --jobs 1 store (process start included)",
        "threads2": "mlmm bench quick --jobs 1 --threads 2 --no-report (the old 2-core default)",
        "rerun": "mlmm bench rerun on the finished store (all skipped), report included",
        "plain": "plain loop of run_experiment (1 process, 1 thread)",
    }
    table = pd.DataFrame(
        [
            {
                "what": labels[s],
                "wall s": r["wall_seconds"],
                "CPU s": r["cpu_seconds"],
                "peak MiB": r["peak_rss_mib"],
                "load before": r["load_1m_before"],
                "load after": r["load_1m_after"],
            }
            for s, r in results.items()
        ]
    ).round(1)
    wall = {s: r["wall_seconds"] for s, r in results.items()}
    if "default" in wall:
        checks["default plan"] = results["default"]["plan"]
        checks["quick suite wall seconds (default, report included)"] = wall["default"]
        checks["quick suite under 5 minutes"] = wall["default"] < 300
    cpu = {s: r["cpu_seconds"] for s, r in results.items()}
    if "jobs1" in wall and "plain" in wall:
        overhead = wall["jobs1"] / wall["plain"] - 1
        checks["runner overhead over the plain loop (jobs 1, wall, fraction)"] = overhead
        # CPU seconds hardly depend on what else runs: the figure to read on a loaded machine
        overhead = cpu["jobs1"] / cpu["plain"] - 1
        checks["runner overhead over the plain loop (jobs 1, CPU, fraction)"] = overhead
        checks["runner overhead under 10% (CPU)"] = overhead < 0.10
    if "default" in cpu and "jobs1" in cpu and "report" in cpu:
        checks["default CPU / (jobs 1 + report) CPU"] = cpu["default"] / (
            cpu["jobs1"] + cpu["report"]
        )
    if "default" in wall and "jobs1" in wall and "report" in wall:
        checks["default wall / (jobs 1 + report) wall"] = wall["default"] / (
            wall["jobs1"] + wall["report"]
        )
    if "threads2" in wall and "jobs1" in wall:
        checks["--threads 2 wall / --threads 1 wall (jobs 1)"] = wall["threads2"] / wall["jobs1"]
        checks["--threads 2 CPU / --threads 1 CPU (jobs 1)"] = cpu["threads2"] / cpu["jobs1"]
    record = {
        "command": command,
        "machine": machine_record
        or {
            **machine(),
            "usable_cores": available_cores(),
            "available_memory_gib_at_end": (available_memory() or 0) / 2**30,
        },
        "wall_seconds": seconds,
        "steps": results,
        "checks": checks,
    }
    write_report(
        out,
        name,
        "Benchmark runner cost",
        "Each step is a fresh process (imports included), one after the other on the same "
        "machine, without OMP_NUM_THREADS in its environment; CPU seconds include the worker "
        "processes; the load average shows what else ran on the machine meanwhile.",
        record,
        table,
        checks,
    )


if __name__ == "__main__":
    main()
