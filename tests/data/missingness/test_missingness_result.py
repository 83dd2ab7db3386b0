"""MaskResult (realised rates, summary, dict) and simulate()."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.missingness import MCAR, MaskResult, NoMissingness, simulate
from mlmm.errors import MlmmError

PRESENT = np.array([[True, True], [True, False], [False, False], [True, True]])
REMOVED = np.array([[False, False], [False, True], [True, False], [False, False]])
# slot (2, 1) was never observed: 3 missing slots of 8, 2 of 7 observed slots removed


def hand_result(unit: str = "slots") -> MaskResult:
    return MaskResult(PRESENT, REMOVED, "mcar:0.25", unit, ("pix", "fou"))


def test_rates_by_hand():
    result = hand_result()
    assert result.slot_rate == 3 / 8
    assert result.sample_rate == 2 / 4
    assert result.per_modality == {"pix": 1 / 4, "fou": 2 / 4}
    assert result.realised_rate == 2 / 7
    assert hand_result("samples").realised_rate == 2 / 4


def test_summary_names_the_unit_and_the_rates():
    line = hand_result().summary()
    assert line == (
        "mcar:0.25 [rate = fraction of observed (sample, modality) slots removed] realised: "
        "37.5% slots, 50.0% samples incomplete; pix 25.0%, fou 50.0%; "
        "28.6% of observed slots removed"
    )
    assert "[rate = fraction of samples made incomplete]" in hand_result("samples").summary()
    full = MaskResult(np.ones((2, 2), bool), np.zeros((2, 2), bool), "none", "slots", ("a", "b"))
    assert full.summary() == (
        "none [no rate] realised: 0.0% slots, 0.0% samples incomplete; a 0.0%, b 0.0%"
    )


def test_to_dict_is_json_ready():
    record = hand_result().to_dict()
    assert json.loads(json.dumps(record)) == record
    assert record["spec"] == "mcar:0.25" and record["unit"] == "slots"
    assert record["per_modality"] == {"pix": 0.25, "fou": 0.5}
    assert set(record) >= {"spec", "unit", "slot_rate", "sample_rate", "per_modality"}


def test_result_rejects_inconsistent_masks():
    with pytest.raises(MlmmError, match="both present and removed"):
        MaskResult(PRESENT, PRESENT, "none", "slots", ("pix", "fou"))
    with pytest.raises(MlmmError, match="must both be"):
        MaskResult(PRESENT, REMOVED[:2], "none", "slots", ("pix", "fou"))


def test_simulate_returns_masked_dataset(full_data):
    masked, result = simulate(full_data, "mcar:0.5", seed=0)
    assert np.array_equal(masked.observed, result.present)
    for j, name in enumerate(full_data.modality_names):
        assert not masked.inputs[name][~result.present[:, j]].any()  # absent rows are zero
        kept = result.present[:, j]
        assert np.array_equal(masked.inputs[name][kept], full_data.inputs[name][kept])
    again, _ = simulate(full_data, MCAR(0.5), seed=0)
    assert np.array_equal(again.observed, masked.observed)


def test_simulate_allows_empty_rows_only_when_asked(full_data):
    masked, result = simulate(full_data, "mcar:0.6:allow_empty", seed=0)
    assert masked.allow_empty and (~masked.observed.any(axis=1)).any()
    masked, _ = simulate(full_data, "mcar:0.6", seed=0)
    assert not masked.allow_empty


def test_simulate_keeps_a_dataset_that_already_had_empty_rows(make_data):
    observed = np.ones((50, 3), dtype=bool)
    observed[0] = False
    data = make_data(50, observed=observed, allow_empty=True)
    masked, result = simulate(data, NoMissingness(), seed=0)
    assert np.array_equal(masked.observed, observed) and result.slot_rate == 1 / 50


def test_apply_rejects_non_datasets():
    with pytest.raises(MlmmError, match="applies to a MultimodalDataset"):
        MCAR(0.5).apply(np.ones((3, 2)), seed=0)
