"""Standardizer: statistics from present rows only, absent rows stay zero, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.preprocessing import Standardizer
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError

# Rows 0, 1 and 3 carry 'a'; rows 0, 2 and 3 carry 's'; rows 1 and 3 carry 'img'.
OBSERVED = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=bool)
A = np.array([[1.0, 10.0], [3.0, 10.0], [-50.0, 99.0], [5.0, 10.0]])  # row 2 absent
S = np.array(
    [
        [[0.0, 1.0], [2.0, 1.0]],
        [[77.0, 77.0], [77.0, 77.0]],  # absent
        [[4.0, 1.0], [6.0, 1.0]],
        [[8.0, 1.0], [10.0, 1.0]],
    ]
)
IMG = np.zeros((4, 2, 1, 2))
IMG[1] = [[[1.0, 3.0]], [[-2.0, 2.0]]]
IMG[3] = [[[5.0, 7.0]], [[-2.0, 2.0]]]
IMG[0] = IMG[2] = 1000.0  # absent


def dataset(task: str = "classification", targets=(0, 1, 0, 1)) -> MultimodalDataset:
    spec = TaskSpec("classification", 2) if task == "classification" else TaskSpec("regression")
    return MultimodalDataset(
        [
            ModalitySpec("a", "vector", (2,)),
            ModalitySpec("s", "sequence", (2, 2)),
            ModalitySpec("img", "image", (2, 1, 2)),
        ],
        spec,
        {"a": A, "s": S, "img": IMG},
        np.array(targets),
        observed=OBSERVED,
    )


def test_vector_statistics_use_present_rows_only():
    std = Standardizer().fit(dataset())
    # present rows of 'a': [1, 10], [3, 10], [5, 10]
    np.testing.assert_allclose(std.mean_["a"], [3.0, 10.0])
    np.testing.assert_allclose(std.std_["a"], [np.sqrt(8 / 3), 1.0])  # constant feature -> 1
    assert std.mean_["a"].shape == (2,)


def test_sequence_statistics_are_per_channel_over_samples_and_time():
    std = Standardizer().fit(dataset())
    # channel 0 of the present rows: 0, 2, 4, 6, 8, 10; channel 1: all 1 (constant)
    assert std.mean_["s"].shape == (1, 2)
    np.testing.assert_allclose(std.mean_["s"], [[5.0, 1.0]])
    np.testing.assert_allclose(std.std_["s"], [[np.sqrt(70 / 6), 1.0]], rtol=1e-6)


def test_image_statistics_are_per_channel():
    std = Standardizer().fit(dataset())
    # channel 0 of rows 1 and 3: 1, 3, 5, 7; channel 1: -2, 2, -2, 2
    assert std.mean_["img"].shape == (2, 1, 1)
    np.testing.assert_allclose(std.mean_["img"].ravel(), [4.0, 0.0])
    np.testing.assert_allclose(std.std_["img"].ravel(), [np.sqrt(5.0), 2.0])


def test_transform_standardises_present_rows_and_keeps_absent_rows_exactly_zero():
    ds = dataset()
    out = Standardizer().fit_transform(ds)
    np.testing.assert_allclose(out.inputs["a"][0], [(1 - 3) / np.sqrt(8 / 3), 0.0], rtol=1e-6)
    np.testing.assert_allclose(out.inputs["a"][3], [(5 - 3) / np.sqrt(8 / 3), 0.0], rtol=1e-6)
    np.testing.assert_allclose(
        out.inputs["img"][1, :, 0, :], [[-3 / np.sqrt(5), -1 / np.sqrt(5)], [-1.0, 1.0]], rtol=1e-6
    )
    for j, name in enumerate(ds.modality_names):
        absent = ~OBSERVED[:, j]
        assert (out.inputs[name][absent] == 0.0).all(), name
        present = out.inputs[name][~absent]
        assert np.isfinite(present).all()
    # standardised present values have mean 0 per feature / channel
    np.testing.assert_allclose(out.inputs["a"][OBSERVED[:, 0]].mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(out.inputs["s"][OBSERVED[:, 1]].mean((0, 1)), 0.0, atol=1e-6)
    assert out.inputs["s"].dtype == np.float32
    np.testing.assert_array_equal(out.observed, ds.observed)
    np.testing.assert_array_equal(out.targets, ds.targets)


def test_constant_feature_is_centred_not_divided_by_zero():
    ds = dataset()
    out = Standardizer().fit_transform(ds)
    # feature 1 of 'a' is 10 in every present row: centred to exactly 0
    assert (out.inputs["a"][:, 1] == 0.0).all()
    assert (out.inputs["s"][:, :, 1] == 0.0).all()


def test_regression_target_is_standardised_and_inverted():
    ds = dataset("regression", targets=(1.0, 2.0, 3.0, 6.0))
    std = Standardizer().fit(ds)
    assert std.target_mean_ == pytest.approx(3.0)
    assert std.target_std_ == pytest.approx(np.sqrt(3.5))
    out = std.transform(ds)
    np.testing.assert_allclose(out.targets, (np.array([1, 2, 3, 6]) - 3) / np.sqrt(3.5), rtol=1e-6)
    np.testing.assert_allclose(std.inverse_target(out.targets), [1, 2, 3, 6], rtol=1e-6)


def test_constant_regression_target_keeps_unit_scale():
    std = Standardizer().fit(dataset("regression", targets=(2.0, 2.0, 2.0, 2.0)))
    assert std.target_mean_ == 2.0 and std.target_std_ == 1.0


def test_features_and_targets_in_small_units_are_scaled_not_taken_for_constants():
    # was: a spread under 1e-6 was a constant, so data in units of 1e-9 reached every method
    # as zeros (chance accuracy) and such a regression target was learned unscaled
    small = dataset("regression", (1e-9, 2e-9, 3e-9, 6e-9))
    unit = dataset("regression", (1.0, 2.0, 3.0, 6.0))
    small.inputs["a"] = A * 1e-9
    std = Standardizer().fit(small)
    np.testing.assert_allclose(std.std_["a"], [1e-9 * np.sqrt(8 / 3), 1.0], rtol=1e-6)
    assert std.target_std_ == pytest.approx(1e-9 * np.sqrt(3.5))
    out, ref = std.transform(small), Standardizer().fit_transform(unit)
    np.testing.assert_allclose(out.inputs["a"], ref.inputs["a"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.targets, ref.targets, rtol=1e-5, atol=1e-6)


def test_a_constant_that_varies_only_by_float32_rounding_stays_a_constant():
    ds = dataset("regression", (3.0, 3.0000002, 3.0, 3.0000002))
    ds.inputs["a"] = A.copy()
    ds.inputs["a"][:, 1] = np.float32(10.0) + np.array([0, 1, 0, 1]) * np.spacing(np.float32(10))
    std = Standardizer().fit(ds)
    assert std.std_["a"][1] == 1.0 and std.target_std_ == 1.0


def test_classification_target_statistics_stay_neutral():
    std = Standardizer().fit(dataset())
    assert std.target_mean_ == 0.0 and std.target_std_ == 1.0


def test_dict_round_trip_through_json_transforms_identically():
    ds = dataset("regression", targets=(1.0, 2.0, 3.0, 6.0))
    std = Standardizer().fit(ds)
    again = Standardizer.from_dict(json.loads(json.dumps(std.to_dict())))
    for name in ds.modality_names:
        np.testing.assert_array_equal(again.mean_[name], std.mean_[name])
        np.testing.assert_array_equal(again.std_[name], std.std_[name])
    assert again.target_mean_ == std.target_mean_ and again.target_std_ == std.target_std_
    a, b = std.transform(ds), again.transform(ds)
    for name in ds.modality_names:
        np.testing.assert_array_equal(a.inputs[name], b.inputs[name])
    np.testing.assert_array_equal(a.targets, b.targets)


def test_transform_before_fit_and_unknown_modality():
    with pytest.raises(MlmmError, match=r"not fitted; call fit\(train_dataset\) first"):
        Standardizer().transform(dataset())
    std = Standardizer().fit(dataset())
    del std.mean_["s"]
    with pytest.raises(MlmmError, match="fitted without modality 's'"):
        std.transform(dataset())


def test_modality_absent_from_every_training_row():
    observed = OBSERVED.copy()
    observed[:, 2] = False
    ds = dataset().with_presence(observed)
    with pytest.raises(MlmmError, match="'img' is absent from every training sample"):
        Standardizer().fit(ds)


def test_a_modality_marked_unstandardised_keeps_its_values_and_zero_absent_rows():
    ids = np.array([[101.0, 2023.0, 0.0], [0.0, 0.0, 0.0], [101.0, 7592.0, 102.0]])
    data = MultimodalDataset(
        [
            ModalitySpec("text", "vector", (3,), standardize=False),
            ModalitySpec("a", "vector", (1,)),
        ],
        TaskSpec("classification", 2),
        {"text": ids, "a": np.array([[1.0], [2.0], [3.0]])},
        np.array([0, 1, 0]),
        observed=np.array([[1, 1], [0, 1], [1, 1]], dtype=bool),
    )
    out = Standardizer().fit_transform(data)
    np.testing.assert_array_equal(out.inputs["text"], ids)  # ids exactly, absent row zero
    np.testing.assert_allclose(out.inputs["a"].ravel(), [-1.2247449, 0.0, 1.2247449], rtol=1e-6)


def test_inputs_near_float32_max_are_standardised_in_float64():
    ds = dataset()
    a = np.where(np.arange(8).reshape(4, 2) % 3 == 0, 3e38, -3e38)  # mean -1e38: x - mean > max
    ds = MultimodalDataset(ds.specs, ds.task, {**ds.inputs, "a": a}, ds.targets, OBSERVED)
    out = Standardizer().fit_transform(ds).inputs["a"]
    assert np.isfinite(out).all() and out.dtype == np.float32
    present = out[OBSERVED[:, 0]]
    np.testing.assert_allclose(present.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(present.std(0), 1.0, rtol=1e-5)


def test_values_too_large_after_standardisation_are_named():
    train = dataset()
    scaler = Standardizer().fit(train)
    far = np.array(A)
    far[0, 0] = 3e38  # std of feature 0 is 1.6: 2e38 standard deviations out
    scaler.std_["a"] = np.array([1e-3, 1.0], dtype=np.float32)
    test = MultimodalDataset(
        train.specs, train.task, {**train.inputs, "a": far}, train.targets, OBSERVED
    )
    with pytest.raises(MlmmError, match="'a' has values too large for float32 after standard"):
        scaler.transform(test)


def test_regression_target_near_1e20_keeps_its_scale():
    # the std used to be computed in float32: the squares overflow and predictions were -inf
    targets = np.array([1.0, 3.0, 2.0, 5.0]) * 1e20
    scaler = Standardizer().fit(dataset("regression", targets))
    assert scaler.target_mean_ == pytest.approx(2.75e20, rel=1e-6)
    assert scaler.target_std_ == pytest.approx(np.std(targets), rel=1e-6)
    z = scaler.transform(dataset("regression", targets)).targets
    np.testing.assert_allclose(scaler.inverse_target(z), targets, rtol=1e-6)
