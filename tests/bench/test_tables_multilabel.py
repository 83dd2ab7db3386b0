"""Multilabel results in the comparison table, the HTML report and the spec's metric check."""

from __future__ import annotations

import pandas as pd
import pytest

from mlmm.bench.report import write_report
from mlmm.bench.spec import parse_spec
from mlmm.bench.tables import comparison_table, format_value, table_metrics
from mlmm.errors import MlmmError

SPEC = {
    "datasets": {"synthetic-multilabel": {"n_samples": 300}},
    "methods": {"hemis": {}},
    "missing": ["none"],
    "seeds": [0],
}
# (method, seed) -> micro-F1; hemis wins on micro-F1, zero-impute on macro AUROC
MICRO = {("hemis", 0): 0.70, ("hemis", 1): 0.72, ("zero-impute", 0): 0.60, ("zero-impute", 1): 0.62}
AUROC = {("hemis", 0): 0.80, ("hemis", 1): 0.80, ("zero-impute", 0): 0.90, ("zero-impute", 1): 0.90}


def _tables():
    runs, results = [], []
    for (method, seed), micro in MICRO.items():
        key = f"{method}-{seed}"
        family = "representation" if method == "hemis" else "imputation"
        runs.append(
            dict(
                run_key=key, dataset="synthetic-multilabel", method=method, family=family,
                subtype="composition", seed=seed, train_condition="none", status="done",
                error=None, n_parameters=1000, n_models=1, train_seconds=1.0,
                latency_ms_per_sample=0.05, threads=1, machine="box", version="0.1.0",
            )
        )  # fmt: skip
        values = {
            "micro_f1": micro,
            "macro_f1": micro - 0.1,
            "samples_f1": micro - 0.05,
            "macro_auroc": AUROC[method, seed],
            "auroc[drama]": AUROC[method, seed],
        }
        for scope, subset in (("overall", "all"), ("subset", "a"), ("subset", "b")):
            for metric, value in values.items():
                results.append(
                    dict(
                        run_key=key, dataset="synthetic-multilabel", method=method, seed=seed,
                        train_condition="none", scope=scope, subset=subset, n=100,
                        condition="none" if scope == "overall" else f"subset:{subset}",
                        slot_rate=0.0, metric=metric, value=value,
                    )
                )  # fmt: skip
    runs = pd.DataFrame(runs)
    results = pd.DataFrame(results).merge(
        runs[["run_key", "n_parameters", "train_seconds"]], on="run_key"
    )
    return runs, results


def test_the_comparison_table_shows_the_multilabel_metrics_micro_f1_first():
    runs, results = _tables()
    table = comparison_table(results)
    assert list(table.columns[4:8]) == ["micro_f1", "macro_f1", "samples_f1", "macro_auroc"]
    hemis = table.set_index("method").loc["hemis"]
    assert hemis["micro_f1"] == "71.0 ± 1.4" and hemis["macro_auroc"] == "80.0 ± 0.0"
    assert "auroc[drama]" not in table.columns  # per-label rows only when asked for
    assert format_value(0.5, "auroc[drama]") == "50.0"


def test_a_classification_metric_list_does_not_make_macro_f1_primary():
    _, results = _tables()
    # a spec's default list (accuracy first) leaves micro-F1 the primary metric
    assert table_metrics(results, ["accuracy", "macro_f1", "auroc", "ece"])[0] == "micro_f1"
    assert table_metrics(results, ["macro_auroc", "micro_f1"]) == ["macro_auroc", "micro_f1"]


def test_the_report_ranks_a_multilabel_leaderboard_by_micro_f1_or_macro_auroc(tmp_path):
    runs, results = _tables()
    page = write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8")
    board = page[page.index('id="leaderboard"') : page.index('id="robustness"')]
    assert "micro-F1 (%)" in board and "macro AUROC" not in board
    assert board.index("hemis") < board.index("zero-impute")
    page = write_report(runs, results, tmp_path / "a.html", metrics=["macro_auroc"])
    text = page.read_text(encoding="utf-8")
    board = text[text.index('id="leaderboard"') : text.index('id="robustness"')]
    assert "macro AUROC (%)" in board and board.index("zero-impute") < board.index("hemis")


def test_spec_metrics_must_score_a_multilabel_dataset():
    assert parse_spec({**SPEC, "metrics": ["micro_f1", "macro_f1"]}).metrics[0] == "micro_f1"
    with pytest.raises(MlmmError, match="'accuracy' scores classification tasks.*use macro_f1"):
        parse_spec({**SPEC, "metrics": ["accuracy"]})
    with pytest.raises(MlmmError, match="'micro_f1' scores multilabel tasks"):
        parse_spec({**SPEC, "datasets": {"synthetic": {}}, "metrics": ["micro_f1"]})


def test_a_loader_whose_parameters_choose_the_task_is_checked_per_spec():
    base = {key: SPEC[key] for key in ("methods", "missing", "seeds")}
    one_genre = {"mmimdb": {"root": "/data/mmimdb", "genre": "Drama"}}
    assert parse_spec({**base, "datasets": one_genre, "metrics": ["accuracy"]})
    genres = {"mmimdb": {"root": "/data/mmimdb"}}
    assert parse_spec({**base, "datasets": genres, "metrics": ["micro_f1"]})
    with pytest.raises(MlmmError, match=r"mmimdb \(multilabel\)"):
        parse_spec({**base, "datasets": genres, "metrics": ["accuracy"]})


def _with_reference(results: pd.DataFrame) -> pd.DataFrame:
    """``results`` plus the bayes-optimal rows that came with each run (macro AUROC 0.95)."""
    ref = results[(results.method == "hemis") & (results.scope == "overall")].copy()
    ref["method"] = "bayes-optimal"
    ref.loc[ref.metric == "macro_auroc", "value"] = 0.95
    ref.loc[ref.metric == "micro_f1", "value"] = 0.65  # below hemis: F1 is not optimised
    return pd.concat([results, ref], ignore_index=True)


def test_the_gap_to_bayes_of_a_multilabel_dataset_is_on_macro_auroc(tmp_path):
    runs, results = _tables()
    results = _with_reference(results)
    table = comparison_table(results).set_index("method")
    # 0.95 - 0.80 on both seeds for hemis, 0.95 - 0.90 for zero-impute; not on micro-F1
    assert table.loc["hemis", "gap_to_bayes"] == "15.0 ± 0.0 (macro_auroc)"
    assert table.loc["zero-impute", "gap_to_bayes"] == "5.0 ± 0.0 (macro_auroc)"
    assert table.loc["bayes-optimal", "gap_to_bayes"] == "-"
    page = write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8")
    gap = page[page.index('id="bayes-gap"') : page.index('id="efficiency"')]
    assert "macro_auroc" in gap and "micro_f1" not in gap
    assert gap.index("zero-impute") < gap.index("hemis")  # smaller gap first


def test_the_report_names_a_condition_scored_without_its_reference(tmp_path):
    """An MNAR condition past synthetic-multilabel's 8 labels has method rows and no Bayes
    rows: the gap section says so in one line instead of leaving it out without a word."""
    runs, results = _tables()
    results = _with_reference(results)  # a reference under "none" only
    seed_1 = (results.method == "bayes-optimal") & (results.seed == 1)
    results = results[~seed_1]  # on one seed only: "none" still has its reference
    mnar = results[(results.method != "bayes-optimal") & (results.scope == "overall")]
    results = pd.concat([results, mnar.assign(condition="mnar:0.5")], ignore_index=True)
    page = write_report(runs, results, tmp_path / "r.html").read_text(encoding="utf-8")
    gap = " ".join(page[page.index('id="bayes-gap"') : page.index('id="efficiency"')].split())
    assert "No reference under synthetic-multilabel mnar:0.5 (train none): under MNAR" in gap
    assert "none (train none)" not in gap
    assert "synthetic-multilabel past 8 labels" in gap
    assert gap.index("zero-impute") < gap.index("No reference under")  # the table stays
