"""run_experiment: determinism, train/test mismatch, the Bayes reference on synthetic."""

import numpy as np
import pandas as pd
import pytest

import mlmm

TINY = {"max_epochs": 3, "progress": False}


def test_same_seed_same_masks_split_and_metrics():
    a = mlmm.run_experiment(
        "synthetic",
        "late-fusion",
        dataset_params={"n_samples": 400},
        missing="mcar:0.5",
        seed=1,
        trainer=TINY,
    )
    b = mlmm.run_experiment(
        "synthetic",
        "late-fusion",
        dataset_params={"n_samples": 400},
        missing="mcar:0.5",
        seed=1,
        trainer=TINY,
    )
    pd.testing.assert_frame_equal(a.table, b.table)
    assert (a.split["test"] == b.split["test"]).all()
    c = mlmm.run_experiment(
        "synthetic",
        "late-fusion",
        dataset_params={"n_samples": 400},
        missing="mcar:0.5",
        seed=2,
        trainer=TINY,
    )
    assert not (a.split["test"] == c.split["test"]).all()


def test_train_full_test_missing_mismatch():
    res = mlmm.run_experiment(
        "synthetic",
        "hemis",
        dataset_params={"n_samples": 400},
        missing="none=>mcar:0.5",
        trainer=TINY,
    )
    assert res.train_mask.slot_rate == 0.0
    overall = res.table[res.table.scope == "overall"]
    assert set(overall.condition) == {"mcar:0.5"}
    assert 0.4 < overall.slot_rate.iloc[0] < 0.6
    assert set(res.table.train_condition) == {"none=>mcar:0.5"}


def test_robustness_curve_and_bayes_reference_under_the_same_masks():
    res = mlmm.run_experiment(
        "synthetic",
        "late-fusion",
        dataset_params={"n_samples": 600},
        missing="mcar:0.3",
        test_missing=["mcar:0", "mcar:0.3", "mcar:0.6"],
        trainer=TINY,
    )
    ref = res.reference
    assert set(ref.method) == {"bayes-optimal"}
    rates = res.table[res.table.scope == "overall"].groupby("condition").slot_rate.first()
    ref_rates = ref[ref.scope == "overall"].groupby("condition").slot_rate.first()
    pd.testing.assert_series_equal(rates, ref_rates)  # identical masks
    acc = ref[(ref.scope == "overall") & (ref.metric == "accuracy")].set_index("condition").value
    assert acc["mcar:0"] > acc["mcar:0.6"]  # less information, lower Bayes accuracy
    summary = mlmm.summarize(res.table)
    assert {"full", "robustness_auc", "worst_subset"} <= set(summary.columns)


def test_an_infeasible_test_condition_keeps_the_scores_of_the_others():
    # three modalities: at most 2/3 of the slots can go while keeping one per sample
    res = mlmm.run_experiment(
        "synthetic",
        "zero-impute",
        dataset_params={"n_samples": 400},
        missing="none",
        test_missing=["none", "mcar:0.75", "mcar:0.5"],
        trainer=TINY,
        subsets=False,
    )
    assert set(res.failed_conditions) == {"mcar:0.75"}
    assert "infeasible" in res.failed_conditions["mcar:0.75"]
    assert set(res.table.condition) == {"none", "mcar:0.5"}
    assert set(res.reference.condition) == {"none", "mcar:0.5"}


def test_bayes_reference_under_mnar_conditions_on_the_presence_pattern():
    kwargs = dict(dataset_params={"n_samples": 600}, trainer=TINY, subsets=False)
    res = mlmm.run_experiment(
        "synthetic", "zero-impute", missing="mnar:0.5", test_missing=["mnar:0.5", "mcar:0.5"],
        **kwargs,
    )  # fmt: skip
    ref = res.reference[res.reference.scope == "overall"].set_index(["condition", "metric"])
    assert 0 < ref.value[("mnar:0.5", "accuracy_mc_se")] < 0.01
    assert ("mcar:0.5", "accuracy_mc_se") not in ref.index  # ignorable: the exact posterior
    # the same masks as the method's (same realised rates)
    table = res.table[res.table.scope == "overall"].groupby("condition").slot_rate.first()
    pd.testing.assert_series_equal(
        table,
        res.reference[res.reference.scope == "overall"].groupby("condition").slot_rate.first(),
    )


def test_a_dataset_with_groups_is_split_by_whole_groups():
    from dataclasses import replace

    import numpy as np

    data = mlmm.load_dataset("synthetic", n_samples=400)
    subjects = np.arange(400) // 5  # 80 subjects with 5 samples each
    res = mlmm.run_experiment(
        replace(data, groups=subjects), "zero-impute", trainer=TINY, subsets=False
    )
    train, val, test = (set(subjects[res.split[k]]) for k in ("train", "val", "test"))
    assert not train & test and not train & val and not val & test


def test_the_official_split_is_used_when_asked():
    import numpy as np
    import pytest

    from mlmm.errors import MlmmError

    data = mlmm.load_dataset("basicmotions")
    res = mlmm.run_experiment(data, "zero-impute", split="official", trainer=TINY, subsets=False)
    official = data.meta["official_split"]
    np.testing.assert_array_equal(res.split["test"], np.flatnonzero(official == "test"))
    np.testing.assert_array_equal(res.split["train"], np.flatnonzero(official == "train"))
    assert res.trained.info["split"] == {"seed": 0, "official": True}
    with pytest.raises(MlmmError, match="records no official split"):
        mlmm.run_experiment("synthetic", "zero-impute", dataset_params={"n_samples": 200},
                            split="official", trainer=TINY)  # fmt: skip
    with pytest.raises(MlmmError, match="split must be 'random' or 'official'"):
        mlmm.run_experiment(data, "zero-impute", split="paper", trainer=TINY)


def test_an_unknown_trainer_parameter_is_one_line_with_the_closest_name():
    from mlmm.errors import MlmmError

    # was Trainer's TypeError ("unexpected keyword argument 'max_epoch'")
    with pytest.raises(MlmmError, match="unknown trainer parameter 'max_epoch'.*'max_epochs'"):
        mlmm.run_experiment("synthetic", "zero-impute", trainer={"max_epoch": 2})


def test_auto_refuses_a_checkpoint_dir_it_would_ignore(tmp_path):
    from mlmm.errors import MlmmError

    # was ignored: fit_auto's members train with trainers of their own, and nothing resumed
    with pytest.raises(MlmmError, match="resumes from its fold cache.*cache_dir") as caught:
        mlmm.run_experiment("synthetic", "auto", trainer={"checkpoint_dir": tmp_path / "c"})
    assert "\n" not in str(caught.value) and not (tmp_path / "c").exists()


def test_synthetic_multilabel_gets_its_exact_reference_and_a_monte_carlo_one_under_mnar():
    res = mlmm.run_experiment(
        "synthetic-multilabel", "late-fusion",
        dataset_params={"n_samples": 1500, "n_modalities": 3},  # 3: mcar:0.5 keeps one each
        missing="mcar:0.5", test_missing=["mcar:0.5", "mnar:0.5"], trainer=TINY, subsets=False,
    )  # fmt: skip
    ref = res.reference
    assert set(ref.method) == {"bayes-optimal"} and set(ref.condition) == {"mcar:0.5", "mnar:0.5"}
    overall = ref[ref.scope == "overall"].set_index(["condition", "metric"]).value
    assert {"micro_f1", "macro_auroc", "auroc[label0]"} <= set(overall["mcar:0.5"].index)
    assert ("mcar:0.5", "macro_auroc_mc_se") not in overall.index  # ignorable: exact
    assert 0 < overall[("mnar:0.5", "macro_auroc_mc_se")] < 0.005
    table = res.table[res.table.scope == "overall"]
    pd.testing.assert_series_equal(  # the same masks as the method's
        table.groupby("condition").slot_rate.first(),
        ref[ref.scope == "overall"].groupby("condition").slot_rate.first(),
    )
    # each label's posterior ranks optimally: the trained model's AUROC is not higher
    method = table.set_index(["condition", "metric"]).value
    for condition in ("mcar:0.5", "mnar:0.5"):
        assert method[(condition, "macro_auroc")] < overall[(condition, "macro_auroc")] + 0.01


def test_synthetic_multilabel_with_too_many_labels_says_why_it_has_no_reference():
    with pytest.warns(UserWarning, match="computed for at most 16 labels, got 17; use fewer") as w:
        res = mlmm.run_experiment(
            "synthetic-multilabel", "zero-impute",
            dataset_params={"n_samples": 200, "n_labels": 17},
            trainer={"max_epochs": 1, "progress": False}, subsets=False,
        )  # fmt: skip
    assert res.reference is None and (res.table.metric == "micro_f1").any()
    assert all("\n" not in str(record.message) for record in w)


def test_synthetic_multilabel_past_the_mnar_limit_says_why_an_mnar_condition_has_no_reference():
    with pytest.warns(UserWarning, match="no Bayes-optimal reference under mnar:0.3: its MNAR "
                      "posterior is computed for at most 8 labels, got 9; use fewer"):  # fmt: skip
        res = mlmm.run_experiment(
            "synthetic-multilabel", "zero-impute", dataset_params={"n_samples": 200, "n_labels": 9},
            test_missing=["mcar:0.3", "mnar:0.3"], trainer={"max_epochs": 1, "progress": False},
            subsets=False,
        )  # fmt: skip
    assert set(res.table.condition) == {"mcar:0.3", "mnar:0.3"}
    assert set(res.reference.condition) == {"mcar:0.3"}  # the exact one, for 2^9 vectors


def test_an_imputation_method_on_two_modalities_is_scored_at_a_reachable_rate():
    # mcar:0.5 cannot be met on two modalities (one is kept per sample); the run used to fail
    # after training with 'missing rate 0.5 ... is infeasible' (every imputation method on
    # basicmotions, avmnist, mmimdb, food101)
    from mlmm.eval.imputation import imputation_hide

    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    views = {"a": y[:, None] + rng.normal(size=(60, 3)), "b": y[:, None] + rng.normal(size=(60, 2))}
    data = mlmm.from_arrays(views, y)
    res = mlmm.run_experiment(
        data, "mean-impute", missing="none", trainer={"max_epochs": 1, "progress": False}
    )
    scores = res.table[res.table.scope == "imputation"]
    assert set(scores.condition) == {"mcar:0.25"}
    assert set(scores[scores.metric == "nrmse"].subset) == {"a", "b"}
    assert imputation_hide(mlmm.load_dataset("synthetic", n_samples=50)) == "mcar:0.5"
    one = mlmm.from_arrays({"a": views["a"]}, y)
    assert imputation_hide(one) is None
    res = mlmm.run_experiment(
        one, "mean-impute", missing="none", trainer={"max_epochs": 1, "progress": False}
    )
    assert not (res.table.scope == "imputation").any()
