"""Benchmarks that do not depend on machine load: epoch budgets give the same rows beside a
busy process, a run cut short by the time limit is stored as such and left out of
comparisons, threads follow the environment, and an infeasible condition stops the benchmark
before the store gets any run."""

import subprocess
import sys

import pandas as pd
import pytest

from mlmm import cli
from mlmm.bench import execute
from mlmm.bench.execute import run_benchmark
from mlmm.bench.report import write_report
from mlmm.bench.spec import parse_spec
from mlmm.bench.store import ResultsStore
from mlmm.bench.tables import comparison_table
from mlmm.errors import MlmmError

KEY = ["run_key", "method", "condition", "scope", "subset", "metric"]


def spec(**changes):
    data = {
        "name": "budget",
        "datasets": {"synthetic": {"n_samples": 240}},
        "methods": {"late-fusion": {}, "zero-impute": {}},
        "missing": [{"train": "mcar:0.5", "test": ["none", "mcar:0.5"]}],
        "seeds": [0, 1],
        "budget": {"max_epochs": 4, "patience": 2},
    }
    return parse_spec({**data, **changes})


def rows(path) -> pd.DataFrame:
    with ResultsStore(path) as db:
        return db.results().sort_values(KEY).reset_index(drop=True)


def test_same_rows_beside_a_cpu_burning_process(tmp_path):
    run_benchmark(spec(), tmp_path / "idle.db", threads=1)  # one job, in this process
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # and two jobs, in worker processes pinned to one thread each: the same rows
        run_benchmark(spec(), tmp_path / "busy.db", jobs=2, threads=1)
    finally:
        burner.kill()
        burner.wait()
    idle, busy = rows(tmp_path / "idle.db"), rows(tmp_path / "busy.db")
    assert len(idle) > 0
    pd.testing.assert_frame_equal(busy, idle)
    with ResultsStore(tmp_path / "busy.db") as db:
        assert set(db.runs().time_limited) == {0}
        assert set(db.runs().threads) == {1}  # the pinning is recorded with each run


def test_a_time_limited_run_is_stored_marked_and_left_out(tmp_path, monkeypatch, capsys):
    # late-fusion trains by epochs and is cut short; the classical reference fits at once
    limited = spec(
        methods={"late-fusion": {}, "logistic-mean-impute": {}},
        seeds=[0],
        budget={"max_epochs": 10_000, "patience": 10_000, "time_limit": 0.05},
    )
    store = tmp_path / "r.db"
    run_benchmark(limited, store, threads=1)
    with ResultsStore(store) as db:
        runs, table = db.runs(), db.table()
    flags = dict(zip(runs.method, runs.time_limited, strict=True))
    assert flags == {"late-fusion": 1, "logistic-mean-impute": 0}
    assert set(comparison_table(table).method) == {"logistic-mean-impute", "bayes-optimal"}
    marks = comparison_table(table, include_time_limited=True).groupby("method").time_limited
    assert marks.min()["late-fusion"] == 1  # marked in the table, under every test condition
    assert marks.max()["logistic-mean-impute"] == 0

    html = write_report(runs, table, tmp_path / "r.html").read_text()
    leaderboard = html.split('id="leaderboard"')[1].split("</section>")[0]
    section = html.split('id="time-limited"')[1].split("</section>")[0]
    assert "late-fusion" not in leaderboard and "late-fusion" in section
    html = write_report(runs, table, tmp_path / "all.html", include_time_limited=True).read_text()
    assert "late-fusion" in html.split('id="leaderboard"')[1].split("</section>")[0]

    # the terminal table marks it too
    path = tmp_path / "limited.yaml"
    path.write_text(
        "name: limited\ndatasets: {synthetic: {n_samples: 240}}\n"
        "methods: {late-fusion: {}, logistic-mean-impute: {}}\n"
        "missing: [{train: 'mcar:0.5', test: [none, 'mcar:0.5']}]\nseeds: [0]\n"
        "budget: {max_epochs: 10000, patience: 10000, time_limit: 0.05}\n"
    )
    store = tmp_path / "cli.db"  # runs it again: its progress lines mark the run too
    argv = ["mlmm", "bench", str(path), "--store", str(store), "--threads", "1", "--no-report"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    out = capsys.readouterr().out
    assert exit_code.value.code in (0, None)
    assert "time-limited synthetic late-fusion mcar:0.5 seed=0" in " ".join(out.split())
    # the progress line said "done", as for any other run
    assert "synthetic late-fusion mcar:0.5 seed=0: done (time-limited)" in out
    assert "logistic-mean-impute mcar:0.5 seed=0: done\n" in out


@pytest.mark.parametrize(
    "dataset, missing, phrase",
    [
        ("synthetic", {"train": "none", "test": ["none", "mcar:0.25", "mcar:0.75"]}, "mcar:0.75"),
        ("basicmotions", "mar:0.5", "mar:0.5"),
    ],
)
def test_an_infeasible_condition_stops_the_benchmark_before_the_store_gets_runs(
    tmp_path, monkeypatch, dataset, missing, phrase
):
    calls = []
    monkeypatch.setattr(execute, "execute_run", lambda c, t: calls.append(c))
    bad = spec(datasets={dataset: {}}, missing=[missing], seeds=[0])
    with pytest.raises(MlmmError) as err:
        run_benchmark(bad, tmp_path / "r.db", threads=1)
    message = str(err.value)
    assert f"'{phrase}'" in message and f"'{dataset}'" in message and "infeasible" in message
    assert "\n" not in message
    assert calls == [] and not (tmp_path / "r.db").exists()


def test_every_infeasible_condition_is_named_at_once():
    # they came one per attempt: fix mcar:0.75, rerun, learn of mcar:0.8, rerun...
    bad = spec(
        datasets={"synthetic": {"n_samples": 240}},
        missing=[{"train": "mcar:0.7", "test": ["none", "mcar:0.75", "mcar:0.8"]}],
    )
    with pytest.raises(MlmmError) as err:
        execute.check_conditions(bad.runs())
    message = str(err.value)
    assert message.startswith("training condition 'mcar:0.7' cannot run on dataset 'synthetic'")
    assert message.endswith(
        "(infeasible too: test mcar:0.75 on synthetic, test mcar:0.8 on synthetic)"
    )
    assert "\n" not in message


def test_the_built_in_suites_are_feasible_and_have_no_time_limit():
    from mlmm.bench.spec import load_suite

    for name in ("quick", "standard"):
        suite = load_suite(name)
        assert suite.budget.time_limit is None, name
        execute.check_conditions(suite.runs())  # raises on a condition a dataset cannot take


def test_each_run_records_the_device_and_the_precision_it_trained_in(tmp_path):
    bf16 = spec(
        methods={"late-fusion": {}, "logistic-mean-impute": {}},
        seeds=[0],
        budget={"max_epochs": 2, "precision": "bf16-mixed"},
    )
    with pytest.warns(UserWarning, match="logistic-mean-impute trains outside the shared loop"):
        run_benchmark(bf16, tmp_path / "bf16.db", threads=1)
    with ResultsStore(tmp_path / "bf16.db") as db:
        runs = db.runs().set_index("method")
    assert set(runs.status) == {"done"}
    assert set(runs.device) == {"cpu"}
    assert runs.loc["late-fusion", "precision"] == "bf16-mixed"
    # the scikit-learn reference fits outside the shared loop: it ran, and is stored, as 32
    assert runs.loc["logistic-mean-impute", "precision"] == "32"
