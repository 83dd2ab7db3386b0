"""The HTML benchmark report: every section, self-contained, numbers right, renders in Chromium."""

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pandas as pd
import pytest

from mlmm.bench.report import write_report
from mlmm.errors import MlmmError
from mlmm.methods import TAXONOMY

SECTIONS = (
    "leaderboard",
    "robustness",
    "subsets",
    "bayes-gap",
    "efficiency",
    "taxonomy",
    "failures",
    "time-limited",
    "tuning",
    "reproduce",
)
FAMILIES = {"late-fusion": ("combination", "ensemble"), "hemis": ("representation", "composition")}
# accuracy under no missingness per (method, seed); MCAR 0.5 costs 10 points
ACCURACY = {
    ("late-fusion", 0): 0.80,
    ("late-fusion", 1): 0.90,
    ("hemis", 0): 0.70,
    ("hemis", 1): 0.72,
}
BAYES_ACCURACY = {0: 0.95, 1: 0.93}  # per seed
ERROR = "shapes [4, 3] and <5> & 'x' do not match"


def _run(key, dataset, method, seed, status="done", error=None):
    family, subtype = FAMILIES[method]
    return dict(
        run_key=key, dataset=dataset, method=method, family=family, subtype=subtype, seed=seed,
        train_condition="none", status=status, error=error, n_parameters=1000, n_models=1,
        train_seconds=2.0 + seed, run_seconds=3.0, latency_ms_per_sample=0.05, threads=1,
        machine="box-1", version="0.1.0",
    )  # fmt: skip


def _result(key, dataset, method, seed, condition, rate, scope, subset, metric, value):
    return dict(
        run_key=key, dataset=dataset, method=method, seed=seed, train_condition="none",
        condition=condition, slot_rate=rate, scope=scope, subset=subset, n=100, metric=metric,
        value=value,
    )  # fmt: skip


def fake_tables():
    """Two seeds of two methods on synthetic (tested under none and MCAR 0.5, with the Bayes
    rows) and on a regression dataset (one test condition), plus one failed run."""
    runs, results = [], []
    for (method, seed), acc in ACCURACY.items():
        key = f"{method}-{seed}"
        runs.append(_run(key, "synthetic", method, seed))
        for condition, rate, drop in [("none", 0.0, 0.0), ("mcar:0.5", 0.5, 0.1)]:
            for name, value in [
                (method, acc - drop),
                ("bayes-optimal", BAYES_ACCURACY[seed] - drop),
            ]:
                results.append(
                    _result(key, "synthetic", name, seed, condition, rate, "overall", "all", "accuracy", value)
                )  # fmt: skip
        for subset, value in [("m0", acc - 0.2), ("m1", acc - 0.1), ("m0+m1", acc)]:
            results.append(
                _result(key, "synthetic", method, seed, f"subset:{subset}", 0.3, "subset", subset, "accuracy", value)
            )  # fmt: skip
        runs.append(_run(key + "-reg", "toy-regression", method, seed))
        results.append(
            _result(key + "-reg", "toy-regression", method, seed, "none", 0.0, "overall", "all", "rmse", acc)
        )  # fmt: skip
    runs.append(_run("hemis-2", "synthetic", "hemis", 2, status="failed", error=ERROR))
    return pd.DataFrame(runs), pd.DataFrame(results)


class Page(HTMLParser):
    """Section ids with their text, and every src/href the page would load."""

    def __init__(self, text):
        super().__init__()
        self.sections, self.links, self.current = {}, [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.current = attrs["id"]
            self.sections[self.current] = ""
        self.links += [(tag, attrs[a]) for a in ("src", "href") if a in attrs]

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.sections[self.current] += " " + data


def squash(text):
    return " ".join(text.split())


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    runs, results = fake_tables()
    path = write_report(runs, results, tmp_path_factory.mktemp("report") / "out" / "report.html")
    return path, Page(path.read_text(encoding="utf-8"))


def test_every_section_is_there_and_the_page_loads_nothing_from_outside(fake_report):
    path, page = fake_report
    assert path.name == "report.html" and path.exists()
    assert tuple(page.sections) == SECTIONS
    text = path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    images = [value for tag, value in page.links if tag == "img"]
    assert images, "the report has no figure"
    for tag, value in page.links:
        assert value.startswith(("#", "data:image/png;base64,")), (tag, value)
    for src in images:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(path.parent.glob(".*.tmp")), "the atomic write left a temporary file"


def test_leaderboard_ranks_with_confidence_intervals_over_seeds(fake_report):
    text = squash(fake_report[1].sections["leaderboard"])
    # late-fusion 0.80/0.90: mean 85.0, t(0.975, 1) × 7.07 / √2 = 63.5 → [21.5, 100 (clipped)];
    # hemis 0.70/0.72: 71.0 ± 12.7; the intervals overlap: hemis is within noise (≈)
    assert "synthetic — accuracy (%), higher is better; 2 seed(s)" in text
    assert "late-fusion combination 85.0 [21.5, 100.0] #1 75.0 [11.5, 100.0] #1 1.0" in text
    # hemis's third seed failed: its cells say so
    assert "hemis representation 71.0 [58.3, 83.7] #2 ≈ 1 run(s) failed 61.0" in text
    # regression is ranked by RMSE, lower first: hemis (0.71) before late-fusion (0.85)
    regression = text[text.index("toy-regression") :]
    assert "toy-regression — RMSE, lower is better" in regression
    assert regression.index("hemis") < regression.index("late-fusion")
    assert "accuracy" not in regression


def test_bayes_gap_is_paired_by_seed(fake_report):
    text = squash(fake_report[1].sections["bayes-gap"])
    # under none: (0.95, 0.93) − (0.80, 0.90) = (15, 3) points; − (0.70, 0.72) = (25, 21)
    assert "late-fusion combination 85.0 ± 7.1 94.0 ± 1.4 9.0 ± 8.5" in text
    assert "hemis representation 71.0 ± 1.4 94.0 ± 1.4 23.0 ± 2.8" in text


def test_efficiency_shows_active_parameters_per_sample(tmp_path):
    runs, results = fake_tables()
    runs["active_parameters"] = [300 if m == "hemis" else None for m in runs.method]
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    efficiency = squash(page.sections["efficiency"])
    assert "active parameters / sample" in efficiency
    assert "the most any sample's tokens can reach" in efficiency  # flex-moe: per sample
    assert "synthetic hemis representation 2 1,000 300 1" in efficiency  # a sparse model
    assert "synthetic late-fusion combination 2 1,000 1,000 1" in efficiency  # no count: all


def test_robustness_plots_only_datasets_with_several_test_rates(fake_report):
    section = fake_report[1].sections["robustness"]
    assert "synthetic" in section
    assert "toy-regression: a single test missing rate, so no curve" in squash(section)


def test_efficiency_taxonomy_and_failures(fake_report):
    sections = {k: squash(v) for k, v in fake_report[1].sections.items()}
    # seeds 0 and 1 trained in 2 s and 3 s
    # without an active-parameter column (an older store) every parameter counts as active
    assert (
        "synthetic late-fusion combination 2 1,000 1,000 1 2.5 ± 0.7 0.050"
        in sections["efficiency"]
    )
    for family, subtypes in TAXONOMY.items():
        for subtype in subtypes:
            assert f"{family} {subtype}" in sections["taxonomy"]
    assert "combination ensemble late-fusion" in sections["taxonomy"]
    assert "cover 2 of" in sections["taxonomy"]
    # a subtype no finished run covered is a highlighted cell
    assert '<td class="empty">—</td>' in fake_report[0].read_text(encoding="utf-8")
    assert ERROR in sections["failures"]
    assert "hemis-2" in sections["failures"]


def test_text_is_escaped(fake_report):
    text = fake_report[0].read_text(encoding="utf-8")
    assert "&lt;5&gt; &amp; &#x27;x&#x27;" in text and "<5>" not in text


def test_a_benchmark_with_no_finished_run_still_gets_a_report(tmp_path):
    runs, results = fake_tables()
    runs = runs.assign(status="failed", error="boom")
    page = Page(
        write_report(runs, results.iloc[:0], tmp_path / "r.html").read_text(encoding="utf-8")
    )
    assert tuple(page.sections) == SECTIONS
    assert "synthetic dataset" in page.sections["bayes-gap"]
    assert "boom" in page.sections["failures"]
    assert "late-fusion (failed)" in page.sections["taxonomy"]


def test_nothing_failed_says_none(tmp_path):
    runs, results = fake_tables()
    runs = runs[runs.status == "done"]
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert squash(page.sections["failures"]) == "Failures none"


def test_missing_columns_are_named(tmp_path):
    runs, results = fake_tables()
    with pytest.raises(MlmmError, match="the results table lacks the column.*slot_rate"):
        write_report(runs, results.drop(columns="slot_rate"), tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_one_seed_gets_a_wilson_interval_for_accuracy_and_says_when_there_is_none(tmp_path):
    runs, results = fake_tables()
    one = results[results.seed == 0]
    page = Page(write_report(runs, one, tmp_path / "r.html").read_text(encoding="utf-8"))
    text = squash(page.sections["leaderboard"])
    # late-fusion 0.80 on n = 100: Wilson 95% interval [71.1, 86.7]; hemis 0.70: [60.4, 78.1]
    assert "late-fusion combination 80.0 [71.1, 86.7] #1" in text
    assert "hemis representation 70.0 [60.4, 78.1] #2 ≈" in text  # the intervals overlap
    assert "one seed: no interval for RMSE" in text
    assert "0.700 #1" in text  # RMSE of hemis, without brackets


def test_an_earlier_configuration_of_a_run_is_left_out_and_counted(tmp_path):
    # the spec changed between runs: the store keeps the earlier run of (synthetic, hemis,
    # none, seed 0) and a failed earlier one of late-fusion; the report averaged the old score
    # with the new under "2 seed(s)" and listed the old failure
    runs, results = fake_tables()
    old = [
        _run("hemis-0-old", "synthetic", "hemis", 0),
        _run("lf-0-old", "synthetic", "late-fusion", 0, status="failed", error="old boom"),
    ]
    old_results = [
        _result("hemis-0-old", "synthetic", "hemis", 0, c, r, "overall", "all", "accuracy", 0.1)
        for c, r in [("none", 0.0), ("mcar:0.5", 0.5)]
    ]
    runs = pd.concat([pd.DataFrame(old), runs], ignore_index=True)  # planned first
    results = pd.concat([pd.DataFrame(old_results), results], ignore_index=True)
    text = write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8")
    page = Page(text)
    assert "hemis representation 71.0 [" in squash(page.sections["leaderboard"])
    assert "old boom" not in page.sections["failures"]
    assert "2 run(s) left out: a later run of the same dataset" in squash(text)

    # the earlier configuration run again finishes last: it is the one shown, and the cell
    # is not emptied by the results' order disagreeing with the finish times
    runs = runs.assign(finished_at=[9.0, 9.0] + [1.0] * (len(runs) - 2))
    page = Page(write_report(runs, results, tmp_path / "r2.html").read_text(encoding="utf-8"))
    text = squash(page.sections["leaderboard"])
    assert "hemis representation 41.0 [" in text  # (10.0 + 72.0) / 2: hemis-0 left out
    assert "old boom" in page.sections["failures"]


def test_time_limited_runs_included_on_request_are_marked_in_their_cells(tmp_path):
    runs, results = fake_tables()
    runs = runs.assign(time_limited=(runs.run_key == "hemis-0").astype(int))
    text = squash(
        Page(
            write_report(runs, results, tmp_path / "r.html", include_time_limited=True).read_text(
                encoding="utf-8"
            )
        ).sections["leaderboard"]
    )
    hemis = text[text.index("hemis representation") :]
    assert hemis.count("1 of 2 time-limited") == 2  # both test conditions of synthetic
    assert "late-fusion combination" in text
    assert "time-limited" not in text[text.index("late-fusion combination") :].split("hemis")[0]


def test_a_test_condition_a_finished_run_could_not_score_is_named_in_failures(tmp_path):
    runs, results = fake_tables()
    errors = '{"mar:0.5": "missing rate 0.5 in \'mar:0.5\' is infeasible"}'
    runs = runs.assign(condition_errors=[errors] + [None] * (len(runs) - 1))
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    text = squash(page.sections["failures"])
    # the terminal said so; the report only showed an empty cell
    assert "1 test condition(s) of finished runs could not be scored" in text
    assert "late-fusion 0 none mar:0.5 late-fusion-0" in text and "is infeasible" in text


def test_tuned_runs_show_their_trials_and_the_point_they_trained_with(tmp_path):
    runs, results = fake_tables()
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "none: every run trained with the hyperparameters its spec gave" in squash(
        page.sections["tuning"]
    )
    studies = pd.DataFrame(
        [dict(study_key="s", run_key="hemis-1", n_trials=5, n_failed=1, best_trial=3,
              best_value=0.41234, best_params={"dropout": 0.123456, "hidden": 64})]
    )  # fmt: skip
    page = Page(
        write_report(runs, results, tmp_path / "t.html", studies=studies).read_text(
            encoding="utf-8"
        )
    )
    text = squash(page.sections["tuning"])
    # the report said nothing of tuning: defaults and tuned points read alike
    assert "1 run(s) tuned their hyperparameters first" in text
    assert "synthetic hemis 1 none 5 (1 failed) 3 0.4123 dropout=0.123, hidden=64" in text


def test_studies_table_reads_the_best_point_from_a_store(tmp_path):
    # the tuning section was only tested on a hand-made table: the point read back from the
    # store's trials (the lowest validation loss among complete ones) was never checked
    from mlmm.bench.report import studies_table
    from mlmm.bench.store import ResultsStore

    def trial(number, state, value, params):
        return dict(number=number, state=state, value=value, params=params, intermediate={},
                    attrs={}, error=None, seconds=1.0, finished_at=1.0)  # fmt: skip

    runs, results = fake_tables()
    with ResultsStore(tmp_path / "s.db") as db:
        db.open_study("s1", {"method": "hemis"}, "synthetic", "hemis", run_key="hemis-0")
        db.open_study("s2", {"method": "hemis"}, "synthetic", "hemis", run_key="hemis-1")
        db.add_trial("s1", trial(0, "complete", 0.5, {"hidden": 32}))
        db.add_trial("s1", trial(1, "complete", 0.25, {"hidden": 64}))
        db.add_trial("s1", trial(2, "failed", None, {"hidden": 128}))
        studies = studies_table(db).set_index("study_key")
    assert studies.loc["s1", "best_params"] == {"hidden": 64}
    assert studies.loc["s2", "best_params"] is None  # no finished trial
    page = Page(
        write_report(runs, results, tmp_path / "r.html", studies=studies.reset_index()).read_text(
            encoding="utf-8"
        )
    )
    text = squash(page.sections["tuning"])
    assert "synthetic hemis 0 none 3 (1 failed) 1 0.2500 hidden=64" in text
    assert "synthetic hemis 1 none 0 – – –" in text


def test_a_training_condition_whose_runs_all_failed_is_a_failed_column(tmp_path):
    runs, results = fake_tables()
    failed = _run("lf-mar", "synthetic", "late-fusion", 0, status="failed", error="boom")
    runs = pd.concat([runs, pd.DataFrame([failed | {"train_condition": "mar:0.5"}])])
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    text = squash(page.sections["leaderboard"])
    assert "train mar:0.5 → (every run failed)" in text
    assert "2 run(s) on synthetic failed" in text
    late_fusion = text[text.index("late-fusion combination") :]
    assert late_fusion.split(" 1.0 ")[0].endswith("failed")  # its cell in the new column


def test_robustness_panels_are_per_training_condition_and_test_mechanism():
    from mlmm.bench.report import _robustness_panels

    rows = [
        ("mcar:0.5", "none", 0.0), ("mcar:0.5", "mcar:0.3", 0.3), ("mcar:0.5", "mcar:0.5", 0.5),
        ("mcar:0.5", "fixed:-a", 0.5), ("mcar:0.5", "fixed:-a-b", 0.67),
    ]  # fmt: skip
    d = pd.DataFrame(
        [
            dict(method="hemis", train_condition=t, condition=c, slot_rate=r, value=0.8, seed=0)
            for t, c, r in rows
        ]
    )
    panels = _robustness_panels(d)
    assert set(panels) == {"trained on mcar:0.5, tested mcar", "trained on mcar:0.5, tested fixed"}
    assert set(panels["trained on mcar:0.5, tested mcar"].condition) == {
        "none", "mcar:0.3", "mcar:0.5"
    }  # fmt: skip
    assert set(panels["trained on mcar:0.5, tested fixed"].condition) == {
        "none", "fixed:-a", "fixed:-a-b"
    }  # fmt: skip


def test_no_trained_as_tested_panel_holds_the_bayes_reference_alone():
    from mlmm.bench.report import _robustness_panels

    # no model was trained under its test condition: each 'trained as tested' panel (mcar,
    # fixed) drew only the Bayes reference over every test condition of the spec
    rows = [
        ("mcar:0.4", "none", 0.0), ("mcar:0.4", "mcar:0.3", 0.3), ("mcar:0.4", "mcar:0.6", 0.6),
        ("mcar:0.4", "fixed:+a", 0.5), ("none", "mcar:0.4", 0.4), ("none", "mar:0.3", 0.3),
    ]  # fmt: skip
    d = pd.DataFrame(
        [
            dict(method=m, train_condition=t, condition=c, slot_rate=r, value=0.8, seed=0)
            for t, c, r in rows
            for m in ("hemis", "bayes-optimal")
        ]
    )
    panels = _robustness_panels(d)
    assert set(panels) == {"trained on mcar:0.4, tested mcar", "trained on mcar:0.4, tested fixed"}
    # a model trained as tested gets its panel, with the reference at its conditions only
    d = pd.concat(
        [d, d[d.condition == "mcar:0.4"].assign(train_condition="mcar:0.4")], ignore_index=True
    )
    d = pd.concat([d, d[d.condition == "none"].assign(train_condition="none")], ignore_index=True)
    panel = _robustness_panels(d)["trained as tested (mcar)"]
    assert set(panel.condition) == {"none", "mcar:0.4"}


def test_many_subsets_are_summarised_with_the_full_table_folded_away(tmp_path):
    from itertools import combinations

    names = [f"m{i}" for i in range(6)]
    subsets = ["+".join(c) for k in range(1, 7) for c in combinations(names, k)]  # 63
    runs, results = fake_tables()
    rows = [
        _result(f"{m}-0", "synthetic", m, 0, f"subset:{s}", 0.5, "subset", s, "accuracy",
                0.5 + 0.05 * s.count("+") + (0.01 if m == "hemis" else 0))
        for m in ("late-fusion", "hemis") for s in subsets
    ]  # fmt: skip
    results = pd.concat([results[results.scope != "subset"], pd.DataFrame(rows)])
    html = write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8")
    section = html[html.index('id="subsets"') : html.index('id="bayes-gap"')]
    assert "<details><summary>Every subset (63) × method: accuracy (%)</summary>" in section
    table = section[section.index("<details>") :]
    assert all(f"<td>{s}</td>" in table for s in subsets)
    # by size: every singleton before every pair
    assert table.index("<td>m5</td>") < table.index("<td>m0+m1</td>")
    assert "synthetic — accuracy (%), higher is better" in section


def test_the_reproduce_section_shows_the_stored_spec_and_command(tmp_path, tiny_spec_file):
    from mlmm.bench.execute import spec_yaml
    from mlmm.bench.spec import load_spec
    from mlmm.bench.store import ResultsStore

    spec = load_spec(tiny_spec_file)
    text = spec_yaml(spec)
    again = tmp_path / "again.yaml"
    again.write_text(text)
    assert [r.key for r in load_spec(again).runs()] == [r.key for r in spec.runs()]
    with ResultsStore(tmp_path / "s.db") as db:
        assert db.specs().empty  # a store without the table reads as holding no spec
        db.save_spec("tiny", "old text", None)
        db.save_spec("tiny", text, "mlmm bench tiny.yaml --seeds 0,1")  # replaces
        specs = db.specs()
    assert specs[["name", "command"]].values.tolist() == [
        ["tiny", "mlmm bench tiny.yaml --seeds 0,1"]
    ]
    runs, results = fake_tables()
    page = Page(
        write_report(runs, results, tmp_path / "r.html", specs=specs).read_text(encoding="utf-8")
    )
    section = squash(page.sections["reproduce"])
    assert "Ran as: mlmm bench tiny.yaml --seeds 0,1" in section
    assert "late-fusion:" in section and "max_epochs: 2" in section
    assert "no spec" in squash(fake_report_page_without_specs(tmp_path).sections["reproduce"])


def test_spec_metrics_choose_the_primary_metric(tmp_path):
    runs, results = fake_tables()
    f1 = results[results.metric == "accuracy"].assign(
        metric="macro_f1", value=lambda x: 1 - x.value
    )
    results = pd.concat([results, f1])
    page = Page(
        write_report(runs, results, tmp_path / "r.html", metrics=["macro_f1", "rmse"]).read_text(
            encoding="utf-8"
        )
    )
    text = squash(page.sections["leaderboard"])
    assert "synthetic — macro-F1 (%), higher is better" in text
    # ranked by macro-F1 (1 - accuracy here): hemis first
    synthetic = text[text.index("synthetic —") : text.index("toy-regression")]
    assert synthetic.index("hemis") < synthetic.index("late-fusion")


def fake_report_page_without_specs(tmp_path):
    runs, results = fake_tables()
    return Page(write_report(runs, results, tmp_path / "plain.html").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """A report from two real (tiny) experiments on synthetic, tested at two missing rates."""
    import platform

    from mlmm.experiment import run_experiment

    runs, tables = [], []
    for method in ("late-fusion", "mean-impute"):
        res = run_experiment(
            "synthetic", method, dataset_params={"n_samples": 300}, missing="mcar:0.5",
            test_missing=["none", "mcar:0.5"], trainer={"max_epochs": 2, "progress": False},
        )  # fmt: skip
        key = f"{method}-0"
        tables += [res.table.assign(run_key=key), res.reference.assign(run_key=key)]
        family, subtype = (type(res.trained.model).family, type(res.trained.model).subtype)
        runs.append(
            dict(
                run_key=key, dataset="synthetic", method=method, family=family, subtype=subtype,
                seed=0, train_condition="mcar:0.5", status="done", error=None,
                n_parameters=res.trained.n_parameters(), n_models=1,
                train_seconds=res.trained.train_seconds, run_seconds=1.0,
                latency_ms_per_sample=0.01, threads=1, machine=platform.node(), version="dev",
            )
        )  # fmt: skip
    path = tmp_path_factory.mktemp("real") / "report.html"
    return write_report(pd.DataFrame(runs), pd.concat(tables, ignore_index=True), path)


def test_report_of_a_real_experiment(real_report):
    page = Page(real_report.read_text(encoding="utf-8"))
    assert tuple(page.sections) == SECTIONS
    assert "single test missing rate" not in page.sections["robustness"]
    assert sum(tag == "img" for tag, _ in page.links) == 2  # robustness curves, subset heatmap
    gap = squash(page.sections["bayes-gap"])
    assert "late-fusion" in gap and "mean-impute" in gap


# ---------------------------------------------------------------- headless browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(path, tmp_path):
    """The DOM headless Chromium built from ``path`` after load, and its log."""
    if CHROMIUM is None:
        pytest.skip(
            "no chromium binary found: install Debian's chromium (apt-get install -y chromium)"
        )
    done = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def render_status(dom):
    match = re.search(r'<body[^>]*data-render="([^"]*)"', dom)
    assert match, "the page's load handler never ran"
    return match.group(1)


def test_report_renders_in_headless_chromium(real_report, tmp_path):
    dom, log = render(real_report, tmp_path)
    assert render_status(dom) == "ok"
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not console, console


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda t: t.replace("base64,iVBOR", "base64,AAAA", 1), "image not decoded"),
        (lambda t: t.replace("</nav>", '<img src="https://example.invalid/x.png" alt="x"></nav>'), "blocked"),
    ],
    ids=["corrupt-image", "external-image"],
)  # fmt: skip
def test_the_browser_check_catches_a_broken_page(fake_report, tmp_path, change, problem):
    broken = tmp_path / "broken.html"
    broken.write_text(change(fake_report[0].read_text(encoding="utf-8")), encoding="utf-8")
    status = render_status(render(broken, tmp_path)[0])
    assert problem in status


def test_efficiency_shows_device_and_precision_and_a_dash_where_unknown(tmp_path):
    runs, results = fake_tables()
    runs["device"], runs["precision"] = "cpu", "32"
    runs.loc[runs.run_key == "hemis-1", ["device", "precision"]] = ["cuda:0", "bf16-mixed"]
    runs.loc[runs.run_key == "late-fusion-0", ["device", "precision"]] = None
    unknown = runs.run_key.str.startswith("late-fusion") & runs.run_key.str.endswith("-reg")
    runs.loc[unknown, ["device", "precision"]] = None
    page = Page(write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8"))
    efficiency = squash(page.sections["efficiency"])
    assert "device precision" in efficiency
    assert "synthetic hemis representation 2" in efficiency
    assert "cpu, cuda:0 32, bf16-mixed" in efficiency  # hemis: two runs, two settings
    # late-fusion on synthetic: one run known (seed 1), one stored before they were recorded
    late = efficiency.split("synthetic late-fusion")[1].split("synthetic")[0]
    assert "cpu 32" in late
    regression = efficiency.split("toy-regression late-fusion")[1].split("toy-regression")[0]
    assert regression.endswith("— —")  # its runs recorded neither


def test_mlmm_report_on_a_store_of_studies_only_says_why_it_is_empty(tmp_path, monkeypatch, capsys):
    import sys

    from mlmm import cli
    from mlmm.bench.store import ResultsStore

    store = tmp_path / "tune.db"
    with ResultsStore(store) as db:
        db.open_study("s1", {"method": "hemis"}, "synthetic", "hemis")
    monkeypatch.setattr(sys, "argv", ["mlmm", "report", str(store)])
    with pytest.raises(SystemExit) as exit_code:
        cli.main()
    assert exit_code.value.code in (0, None)
    out = " ".join(capsys.readouterr().out.split())
    # it wrote an empty page and said nothing about why
    assert "holds no benchmark run (1 tuning study(ies)), so the report is empty" in out
    assert (tmp_path / "tune.html").exists()
