"""The terminal comparison table: metrics follow the task and the spec, from the tidy table."""

import pandas as pd

from mlmm.bench.tables import comparison_table, format_value, table_metrics


def _rows(dataset, method, seed, metrics, scope="overall", subset="all"):
    return [
        dict(
            dataset=dataset, method=method, seed=seed, train_condition="mcar:0.5",
            condition="mcar:0.5", slot_rate=0.5, scope=scope, subset=subset, metric=m, value=v,
            n_parameters=10, train_seconds=1.0,
        )
        for m, v in metrics.items()
    ]  # fmt: skip


def test_a_regression_table_without_subset_rows():
    rows = []
    for seed, rmse in [(0, 0.5), (1, 0.7)]:
        rows += _rows("toy", "hemis", seed, {"rmse": rmse, "mae": 0.4, "r2": 0.81234})
    table = comparison_table(pd.DataFrame(rows))
    assert list(table.columns[4:7]) == ["rmse", "mae", "r2"]
    row = table.iloc[0]
    assert (row.rmse, row.mae, row.r2) == ("0.600 ± 0.141", "0.400 ± 0.000", "0.812 ± 0.000")
    assert row.worst_subset == "-" and "gap_to_bayes" not in table.columns


def test_spec_metrics_choose_and_order_the_columns_and_mixed_tasks_share_a_table():
    rows = _rows("toy", "hemis", 0, {"rmse": 0.5, "mae": 0.4, "r2": 0.8})
    rows += _rows("syn", "hemis", 0, {"accuracy": 0.9, "macro_f1": 0.85, "ece": 0.1})
    rows += _rows("syn", "hemis", 0, {"accuracy": 0.7}, scope="subset", subset="a")
    results = pd.DataFrame(rows)
    table = comparison_table(results, ["mae", "macro_f1", "accuracy"])
    assert list(table.columns[4:7]) == ["mae", "macro_f1", "accuracy"]
    toy, syn = table.set_index("dataset").loc["toy"], table.set_index("dataset").loc["syn"]
    assert (toy.mae, toy.macro_f1) == ("0.400", "-")
    assert (syn.macro_f1, syn.accuracy) == ("85.0", "90.0")
    # the worst subset on the dataset's primary metric: macro-F1 has no subset rows here
    assert syn.worst_subset == "-"
    assert table_metrics(results[results.dataset == "syn"], ["rmse"]) == [
        "accuracy", "macro_f1", "ece"
    ]  # fmt: skip


def test_number_formats():
    assert format_value(0.8567, "accuracy") == "85.7"
    assert format_value(0.12345, "rmse") == "0.123"
    assert format_value(float("nan"), "rmse") == "-"


def test_a_seed_with_an_undefined_metric_is_counted_not_hidden():
    rows = []
    for seed, acc in [(0, float("nan")), (1, 0.8), (2, 0.6)]:  # seed 0 diverged: NaN
        rows += _rows("syn", "m", seed, {"accuracy": acc, "ece": 0.1})
        rows += _rows("syn", "m", seed, {"accuracy": acc}, scope="subset", subset="a")
    row = comparison_table(pd.DataFrame(rows)).iloc[0]
    # the mean over the two defined seeds says so (it read "70.0 ± 14.1" beside seeds = 3)
    assert row.accuracy == "70.0 ± 14.1 (2 of 3)" and row.seeds == 3
    assert row.ece == "0.100 ± 0.000"


def test_a_run_whose_every_subset_is_undefined_says_so():
    rows = []
    for seed in (0, 1):
        rows += _rows("syn", "m", seed, {"accuracy": float("nan"), "ece": float("nan")})
        rows += _rows("syn", "m", seed, {"accuracy": float("nan")}, scope="subset", subset="a")
    row = comparison_table(pd.DataFrame(rows)).iloc[0]  # was an IndexError
    # not "-", which reads as "not measured"
    assert (row.accuracy, row.worst_subset) == ("undefined (0 of 2)", "undefined (0 of 2) (a)")


def test_a_subset_undefined_on_a_seed_is_its_worst_and_the_gap_counts_the_seed():
    rows = []
    for seed, a in [(0, float("nan")), (1, 0.5), (2, 0.5)]:  # seed 0 diverged on subset a
        acc = 0.7 if seed else float("nan")  # ... so its overall score is undefined too
        rows += _rows("syn", "m", seed, {"accuracy": acc})
        rows += _rows("syn", "m", seed, {"accuracy": a}, scope="subset", subset="a")
        rows += _rows("syn", "m", seed, {"accuracy": 0.9}, scope="subset", subset="b")
        rows += _rows("syn", "bayes-optimal", seed, {"accuracy": 0.8})
    row = comparison_table(pd.DataFrame(rows)).set_index("method").loc["m"]
    # seed 0's worst was b (90.0) with a skipped: the worst read 63.3, not the 50.0 of a
    assert row.worst_subset == "50.0 ± 0.0 (2 of 3) (a)"
    assert row.gap_to_bayes == "10.0 ± 0.0 (2 of 3)"  # read "10.0 ± 0.0" beside seeds = 3


def test_an_earlier_configuration_of_a_run_is_not_averaged_with_the_later_one():
    # the spec was edited between two runs (max_epochs 2 -> 3): the store holds both runs of
    # each seed; the table counted 2 seeds but averaged 4 values of two configurations
    from mlmm.bench.tables import superseded_keys

    rows = []
    for key, seed, acc in [("old0", 0, 0.5), ("old1", 1, 0.5), ("new0", 0, 0.8), ("new1", 1, 0.9)]:
        rows += [
            dict(r, run_key=key, run_method="m") for r in _rows("syn", "m", seed, {"accuracy": acc})
        ]
    results = pd.DataFrame(rows)
    assert superseded_keys(results) == {"old0", "old1"}
    row = comparison_table(results).iloc[0]
    assert (row.accuracy, row.seeds) == ("85.0 ± 7.1", 2)
    # by finish time where the runs say it: the old configuration finished last wins
    runs = pd.DataFrame(
        [dict(run_key=k, dataset="syn", method="m", train_condition="mcar:0.5", seed=s,
              status="done", finished_at=t)
         for k, s, t in [("old0", 0, 5.0), ("new0", 0, 2.0), ("old1", 1, 5.0), ("new1", 1, 2.0)]]
    )  # fmt: skip
    assert superseded_keys(runs) == {"new0", "new1"}
    assert comparison_table(results, runs=runs).iloc[0].accuracy == "50.0 ± 0.0"
    # another method, seed or training condition is not a later run of the cell
    other = pd.DataFrame(
        [dict(r, run_key=k, run_method=meth) for k, meth in [("a", "m"), ("b", "n")]
         for r in _rows("syn", meth, 0, {"accuracy": 0.5})]
    )  # fmt: skip
    assert superseded_keys(other) == set()


def test_each_dataset_keeps_its_rows_together_with_its_bayes_reference():
    rows = []
    for dataset in ("syn", "other"):
        rows += [dict(r, run_key=f"{dataset}-m") for r in _rows(dataset, "m", 0, {"accuracy": 0.7})]
    rows += [dict(r, run_key="syn-m") for r in _rows("syn", "bayes-optimal", 0, {"accuracy": 0.9})]
    table = comparison_table(pd.DataFrame(rows))
    # the reference of 'syn' was printed last, below the rows of 'other'
    assert list(zip(table.dataset, table.method, strict=True)) == [
        ("syn", "m"), ("syn", "bayes-optimal"), ("other", "m")
    ]  # fmt: skip


def test_failed_seeds_are_counted_beside_the_finished_ones():
    rows = []
    for seed in (0, 1):
        rows += [dict(r, run_key=f"m{seed}") for r in _rows("syn", "m", seed, {"accuracy": 0.7})]
    rows += [dict(r, run_key="n0") for r in _rows("syn", "n", 0, {"accuracy": 0.6})]
    runs = pd.DataFrame(
        [dict(run_key=k, dataset="syn", method=m, train_condition="mcar:0.5", seed=s, status=st)
         for k, m, s, st in [("m0", "m", 0, "done"), ("m1", "m", 1, "done"),
                             ("n0", "n", 0, "done"), ("n1", "n", 1, "failed")]]
    )  # fmt: skip
    table = comparison_table(pd.DataFrame(rows), runs=runs).set_index("method")
    # 'n' read "60.0, seeds 1" beside 'm' with 2, its failed seed only in a line below
    assert (table.loc["n", "seeds"], table.loc["n", "failed"]) == (1, 1)
    assert table.loc["m", "failed"] == 0
    assert "failed" not in comparison_table(pd.DataFrame(rows), runs=runs.iloc[:3]).columns
