"""The per-subset evaluation protocol: one tidy table, known numbers from a fake model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import parse_missingness, simulate
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.eval.protocol import COLUMNS, evaluate, modality_subsets, subset_name
from mlmm.testing import contract_dataset, padded_sequence_dataset
from mlmm.utils import rng_for

N = 40


class OracleOfA:
    """Right (with confidence 0.9) exactly when modality 'a' is present, wrong otherwise;
    the training prior [0.5, 0.5] for empty samples. Records what it was asked."""

    task = TaskSpec("classification", 2)

    def __init__(self) -> None:
        self.calls: list[tuple[MultimodalDataset, str]] = []

    def predict_raw(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        self.calls.append((dataset, on_empty))
        empty = ~dataset.observed.any(axis=1)
        if empty.any() and on_empty == "error":
            raise MlmmError("empty samples")
        right = dataset.observed[:, 0]
        predicted = np.where(right, dataset.targets, 1 - dataset.targets)
        proba = np.full((dataset.n_samples, 2), 0.1)
        proba[np.arange(dataset.n_samples), predicted] = 0.9
        proba[empty] = 0.5
        return proba


def dataset(observed: np.ndarray | None = None) -> MultimodalDataset:
    rng = np.random.default_rng(0)
    return MultimodalDataset(
        [ModalitySpec(m, "vector", (2,)) for m in ("a", "b", "c")],
        TaskSpec("classification", 2),
        {m: rng.normal(size=(N, 2)) for m in ("a", "b", "c")},
        np.arange(N) % 2,
        observed=observed,
    )


def rows(table: pd.DataFrame, scope: str, metric: str = "accuracy") -> pd.DataFrame:
    return table[(table.scope == scope) & (table.metric == metric)]


def test_subset_names_and_enumeration():
    assert subset_name(("a", "c")) == "a+c"
    assert modality_subsets(["a", "b", "c"]) == [
        ("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"), ("a", "b", "c"),
    ]  # fmt: skip
    many = [f"m{i}" for i in range(12)]
    reduced = modality_subsets(many)
    assert len(reduced) == 12 + 12 + 1
    assert tuple(many) in reduced and ("m3",) in reduced and tuple(many[1:]) in reduced


def test_table_has_the_documented_columns_and_scopes():
    table = evaluate(OracleOfA(), dataset(), "none,mcar:0.5")
    assert list(table.columns) == COLUMNS
    assert set(table.scope) == {"overall", "pattern", "subset"}
    assert set(table.metric) == {
        "accuracy", "macro_f1", "auroc", "ece", "balanced_accuracy", "log_loss", "brier",
    }  # fmt: skip
    assert set(table[table.scope == "overall"].condition) == {"none", "mcar:0.5"}


def test_forced_subsets_for_three_modalities():
    table = evaluate(OracleOfA(), dataset(), "none", patterns=False)
    sub = rows(table, "subset")
    assert len(sub) == 2**3 - 1
    assert sub.subset.tolist() == ["a", "b", "c", "a+b", "a+c", "b+c", "a+b+c"]
    assert (sub.condition == "subset:" + sub.subset).all()
    assert (sub.n == N).all()
    # the fake is right exactly when 'a' is present
    assert sub.set_index("subset").value.to_dict() == {
        "a": 1.0, "b": 0.0, "c": 0.0, "a+b": 1.0, "a+c": 1.0, "b+c": 0.0, "a+b+c": 1.0,
    }  # fmt: skip
    single = sub.set_index("subset").loc["b"]
    assert single.slot_rate == pytest.approx(2 / 3) and single.sample_rate == 1.0
    full = sub.set_index("subset").loc["a+b+c"]
    assert full.slot_rate == 0.0 and full.sample_rate == 0.0


def test_forced_subsets_only_score_rows_that_observe_some_of_the_subset():
    observed = np.ones((N, 3), bool)
    observed[:10, 0] = False  # 'a' never recorded for the first 10 rows
    table = evaluate(OracleOfA(), dataset(observed), "none", patterns=False)
    n = rows(table, "subset").set_index("subset").n
    assert n["a"] == 30 and n["b"] == N and n["a+b"] == N


def test_overall_rows_use_the_masked_data_and_report_its_realised_rates():
    fake = OracleOfA()
    table = evaluate(fake, dataset(), "mcar:0.5", seed=3, subsets=False, patterns=False)
    ((masked, on_empty),) = fake.calls
    assert on_empty == "prior"
    row = rows(table, "overall").iloc[0]
    assert row.n == N and row.rate_unit == "slots" and row.subset == "all"
    assert row.slot_rate == pytest.approx(1 - masked.observed.mean())
    assert row.sample_rate == pytest.approx((~masked.observed.all(axis=1)).mean())
    assert row.value == pytest.approx(masked.observed[:, 0].mean())  # right when 'a' is present
    assert 0.3 < row.slot_rate < 0.7


def test_realised_rates_match_the_mask_result():
    data = dataset()
    table = evaluate(OracleOfA(), data, "mcar:0.4", seed=5, subsets=False, patterns=False)
    model = parse_missingness("mcar:0.4")
    _, result = simulate(data, model, rng_for(5, "test-mask", model.to_string()))
    row = rows(table, "overall").iloc[0]
    assert row.slot_rate == result.slot_rate and row.sample_rate == result.sample_rate


def test_pattern_rows_partition_the_overall_rows():
    fake = OracleOfA()
    specs = "mcar:0.5,mcar:0.7:allow_empty"
    table = evaluate(fake, dataset(), specs, seed=1, subsets=False)
    empty_calls = [d for d, _ in fake.calls if not d.observed.any()]
    assert len(empty_calls) == 1  # only the allow_empty condition leaves empty samples
    for cond in ("mcar:0.5", "mcar:0.7:allow_empty"):
        overall = rows(table, "overall")
        pattern = rows(table, "pattern")
        pattern = pattern[pattern.condition == cond]
        assert pattern.n.sum() == overall[overall.condition == cond].n.iloc[0] == N
        assert pattern.subset.is_unique and len(pattern) > 1
        for r in pattern.itertuples():
            expected = 1.0 if r.subset.split("+")[0] == "a" else 0.0
            if r.subset == "(none)":
                # answered by the prior [0.5, 0.5], whose argmax is class 0
                expected = (empty_calls[0].targets == 0).mean()
                assert r.n == empty_calls[0].n_samples
            assert r.value == expected, r.subset
    assert "(none)" not in set(rows(table, "pattern").query("condition == 'mcar:0.5'").subset)


def test_same_seed_same_table_and_independent_of_condition_order():
    a = evaluate(OracleOfA(), dataset(), "none,mcar:0.3,mcar:0.6", seed=2)
    b = evaluate(OracleOfA(), dataset(), ["none", "mcar:0.3", "mcar:0.6"], seed=2)
    pd.testing.assert_frame_equal(a, b)
    c = evaluate(OracleOfA(), dataset(), "mcar:0.6", seed=2, subsets=False)
    pd.testing.assert_frame_equal(
        rows(a, "overall", "ece").query("condition == 'mcar:0.6'").reset_index(drop=True),
        rows(c, "overall", "ece").reset_index(drop=True),
    )
    d = evaluate(OracleOfA(), dataset(), "mcar:0.6", seed=3, subsets=False)
    assert not c.equals(d), "another seed drew the same test masks"


def test_switches_and_bad_specs():
    table = evaluate(OracleOfA(), dataset(), "none", subsets=False, patterns=False)
    assert set(table.scope) == {"overall"} and len(table) == 7  # 4 default metrics + 3 more
    with pytest.raises(MlmmError, match="at least one test missingness spec"):
        evaluate(OracleOfA(), dataset(), [])


def test_with_a_trained_model():
    data = contract_dataset()
    split = mlmm.train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = mlmm.create_method("late-fusion", data.specs, data.task, embed_dim=8, hidden=16)
    trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    table = evaluate(trained, split.test, "none,mcar:0.5")
    assert list(table.columns) == COLUMNS
    sub = rows(table, "subset")
    assert len(sub) == 7 and (sub.n == split.test.n_samples).all()
    assert table.value.notna().all()
    acc = table[table.metric == "accuracy"].value
    assert ((acc >= 0) & (acc <= 1)).all()
    none = rows(table, "overall").query("condition == 'none'").value.iloc[0]
    assert none == pytest.approx((trained.predict(split.test) == split.test.targets).mean())


def test_every_scope_reads_no_padding_of_variable_length_sequences():
    # overall conditions (the robustness curve), patterns and forced subsets, with ECE: the
    # same test samples with 1e3 in the padding of their present sequences give the same table
    split = mlmm.train_val_test_split(padded_sequence_dataset(), seed=0)
    noisy = split.test.subset(np.arange(split.test.n_samples))  # a copy
    steps = noisy.lengths["s"]
    padded = np.arange(8)[None, :] >= steps[:, None]  # [N, T]
    noisy.inputs["s"][padded & noisy.observed[:, 1:]] = 1e3  # after construction, which zeroes
    assert (noisy.inputs["s"] == 1e3).any()
    model = mlmm.create_method("zero-impute", split.train.specs, split.train.task)
    trained = mlmm.Trainer(max_epochs=2, progress=False, seed=0).fit(model, split.train)
    tables = [evaluate(trained, test, "none,mcar:0.2", seed=0) for test in (split.test, noisy)]
    assert set(tables[0].scope) == {"overall", "pattern", "subset"}
    assert "ece" in set(tables[0].metric)
    pd.testing.assert_frame_equal(tables[0], tables[1])
