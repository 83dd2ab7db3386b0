"""A model trained on variable-length sequences: its artifact keeps that, and prediction
from arrays (which carry no lengths) is refused instead of counting padding as data."""

from dataclasses import replace

import numpy as np
import pytest

from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train import TrainedModel, Trainer


def test_variable_length_model_round_trips_and_refuses_arrays(tmp_path):
    data = contract_dataset(n_samples=48)
    data = replace(data, lengths={"s": np.random.default_rng(0).integers(3, 13, size=48)})
    model = create_method("zero-impute", data.specs, data.task, hidden=16)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    trained.save(tmp_path / "model")
    loaded = TrainedModel.load(tmp_path / "model")
    assert loaded.info["variable_length"] == ["s"]
    np.testing.assert_allclose(loaded.predict_proba(data), trained.predict_proba(data))
    arrays = {k: v for k, v in data.inputs.items()}
    with pytest.raises(MlmmError, match=r"variable-length sequences \['s'\].*lengths="):
        loaded.predict(arrays)


def test_arrays_predict_with_their_lengths_as_the_dataset_does():
    data = contract_dataset(n_samples=48)
    steps = np.random.default_rng(0).integers(3, 13, size=48)
    data = replace(data, lengths={"s": steps})
    model = create_method("zero-impute", data.specs, data.task, hidden=16)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    arrays = {k: v.copy() for k, v in data.inputs.items()}
    padded = np.arange(arrays["s"].shape[1])[None, :] >= steps[:, None]  # [N, T]
    arrays["s"][padded] = 7.0  # the padding's values are not read
    expected = trained.predict_proba(data)
    np.testing.assert_allclose(trained.predict_proba(arrays, lengths={"s": steps}), expected)
    np.testing.assert_array_equal(
        trained.predict(arrays, lengths={"s": steps}), trained.predict(data)
    )
    # a modality left out of the arrays needs no lengths
    without = {k: v for k, v in arrays.items() if k != "s"}
    reference = trained.predict_proba(data.with_presence(data.observed & [True, True, False]))
    np.testing.assert_allclose(trained.predict_proba(without, lengths={}), reference)
    np.testing.assert_allclose(trained.predict_proba(without), reference)
    with pytest.raises(MlmmError, match=r"no lengths for 's', which is present in 48 row"):
        trained.predict(arrays, lengths={})
    with pytest.raises(MlmmError, match=r"lengths\['s'\] must be in \[0, 12\]"):
        trained.predict(arrays, lengths={"s": steps + 20})
    with pytest.raises(MlmmError, match=r"lengths were given for \['a'\]"):
        trained.predict(arrays, lengths={"s": steps, "a": steps})
    with pytest.raises(MlmmError, match="a dataset carries its own"):
        trained.predict(data, lengths={"s": steps})


def test_nan_padding_is_not_read_and_a_nan_row_stays_absent():
    """NaN after the valid steps read as a partly-NaN row: predict refused it, and
    as_dataset(partial="missing") silently dropped the modality from every short row."""
    data = contract_dataset(n_samples=40)
    steps = np.random.default_rng(1).integers(3, 12, size=40)
    data = replace(data, lengths={"s": steps})
    model = create_method("zero-impute", data.specs, data.task, hidden=16)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    arrays = {k: v.astype(np.float64) for k, v in data.inputs.items()}
    padded = np.arange(arrays["s"].shape[1])[None, :] >= steps[:, None]  # [N, T]
    arrays["s"][padded] = np.nan
    absent = np.arange(40) % 5 == 0
    arrays["s"][absent] = np.nan  # these rows lack the modality
    observed = data.observed & ~(absent[:, None] & [False, False, True])
    expected = trained.predict_proba(data.with_presence(observed))
    np.testing.assert_allclose(trained.predict_proba(arrays, lengths={"s": steps}), expected)
    as_missing = trained.as_dataset(arrays, partial="missing", lengths={"s": steps})
    np.testing.assert_array_equal(as_missing.observed, observed)
    with pytest.raises(MlmmError, match=r"lengths\['s'\] must be in \[0, 12\] .* 23 to 31"):
        trained.predict(arrays, lengths={"s": steps + 20})
    with pytest.raises(MlmmError, match="lengths must be a dict .* got ndarray"):
        trained.predict(arrays, lengths=steps)


def test_lengths_for_a_full_length_model_are_refused():
    data = contract_dataset(n_samples=24)
    model = create_method("zero-impute", data.specs, data.task, hidden=16)
    trained = Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    with pytest.raises(MlmmError, match="trained on full-length sequences; drop lengths="):
        trained.predict(dict(data.inputs), lengths={"s": np.full(24, 3)})
