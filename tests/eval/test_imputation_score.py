"""The imputation score: hidden slots, NRMSE in standardised units, downstream accuracy."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.errors import MlmmError
from mlmm.eval.imputation import imputation_scores
from mlmm.methods.imputation.zero_impute import ZeroImpute
from mlmm.testing import contract_dataset, padded_sequence_dataset
from mlmm.utils import rng_for


class MeanFill(ZeroImpute):
    """Fills absent rows with the training mean (0 after standardisation)."""

    imputes = True

    def impute(self, batch):
        return {
            k: torch.where(
                batch.present[:, j].reshape(-1, *[1] * (v.dim() - 1)), v, torch.zeros_like(v)
            )
            for j, (k, v) in enumerate(batch.inputs.items())
        }


def trained_pair():
    data = contract_dataset()
    split = mlmm.train_val_test_split(data, seed=0)
    trainer = mlmm.Trainer(max_epochs=3, progress=False)
    imputer = trainer.fit(MeanFill(data.specs, data.task), split.train, split.val)
    plain = trainer.fit(ZeroImpute(data.specs, data.task), split.train, split.val)
    return imputer, plain, split.test


def test_nrmse_of_mean_filling_is_the_rms_of_the_hidden_standardised_values():
    imputer, _, test = trained_pair()
    table = imputation_scores(imputer, test, "mcar:0.5", seed=0)
    masked, result = mlmm.simulate(test, "mcar:0.5", rng_for(0, "imputation-mask", "mcar:0.5"))
    truth = imputer.standardizer.transform(test)
    for j, name in enumerate(test.modality_names):
        hidden = result.removed[:, j]
        expected = np.sqrt(np.mean(truth.inputs[name][hidden] ** 2))
        row = table[(table.subset == name) & (table.metric == "nrmse")]
        assert row.n.item() == hidden.sum()
        assert row.value.item() == pytest.approx(expected, rel=1e-5)
    acc = table.set_index("metric").value
    assert 0 <= acc["accuracy_imputed"] <= 1 and 0 <= acc["accuracy_true"] <= 1


def test_same_seed_same_scores_and_methods_that_do_not_impute_are_refused():
    imputer, plain, test = trained_pair()
    a = imputation_scores(imputer, test, seed=1)
    b = imputation_scores(imputer, test, seed=1)
    assert a.equals(b)
    with pytest.raises(MlmmError, match="does not impute"):
        imputation_scores(plain, test)


def test_accuracy_compares_class_indices_when_the_task_has_label_names():
    # TrainedModel.predict gives the training labels ("c0"...); the targets are indices
    from dataclasses import replace

    data = contract_dataset()
    names = tuple(f"c{k}" for k in range(data.task.n_classes))
    data = replace(data, task=replace(data.task, class_names=names))
    split = mlmm.train_val_test_split(data, seed=0)
    imputer = mlmm.Trainer(max_epochs=3, progress=False).fit(
        MeanFill(data.specs, data.task), split.train, split.val
    )
    table = imputation_scores(imputer, split.test, "mcar:0.5", seed=0).set_index("metric").value
    expected = (imputer.predict_raw(split.test).argmax(1) == split.test.targets).mean()
    assert table["accuracy_true"] == pytest.approx(expected)
    assert str(imputer.predict(split.test)[0]).startswith("c")


def test_fixed_length_scores_are_the_all_entries_rms_bit_for_bit():
    # data without lengths: every entry of a hidden row counts, as before variable lengths
    imputer, _, test = trained_pair()
    table = imputation_scores(imputer, test, "mcar:0.5", seed=0)
    masked, result = mlmm.simulate(test, "mcar:0.5", rng_for(0, "imputation-mask", "mcar:0.5"))
    truth = imputer.standardizer.transform(test)
    batch = mlmm.MultimodalBatch.from_dataset(
        imputer.standardizer.transform(masked), with_target=False
    )
    with torch.no_grad():
        filled = imputer.model.eval().impute(batch)
    for j, name in enumerate(test.modality_names):
        hidden = result.removed[:, j]
        k = int(hidden.sum())
        err = filled[name].numpy()[hidden].reshape(k, -1) - truth.inputs[name][hidden].reshape(
            k, -1
        )
        row = table[(table.subset == name) & (table.metric == "nrmse")]
        assert row.value.item() == float(np.sqrt(np.mean(err**2)))


class GarbagePaddingFill(ZeroImpute):
    """Fills absent rows with 1 on their valid steps and 1e3 on the padding after them."""

    imputes = True

    def impute(self, batch):
        out = dict(batch.inputs)
        x = batch.inputs["s"]  # [B, T, C]
        steps = torch.arange(x.shape[1])[None, :, None]  # [1, T, 1]
        guess = torch.where(steps < batch.lengths["s"][:, None, None], 1.0, 1e3)  # [B, T, 1]
        absent = ~batch.present[:, 1]
        out["s"] = torch.where(absent[:, None, None], guess.expand_as(x).to(x.dtype), x)
        return out


def tiny_padded(garbage: bool):
    """Six samples; ``s`` (3 steps, 1 channel, not standardised: its scaled values are the raw
    ones) with 1, 2 or 3 valid steps."""
    steps = np.array([1, 2, 3, 1, 2, 3])
    s = np.zeros((6, 3, 1))
    for i, valid in enumerate([[2], [0, 1], [1, 1, 4], [-1], [1, 2], [0, 1, 1]]):
        s[i, : len(valid), 0] = valid
    data = mlmm.MultimodalDataset(
        [mlmm.ModalitySpec("a", "vector", (1,)), mlmm.ModalitySpec("s", "sequence", (3, 1), False)],
        mlmm.TaskSpec("classification", 2),
        {"a": np.arange(6.0)[:, None], "s": s},
        np.arange(6) % 2,
        lengths={"s": steps},
    )
    if garbage:  # after construction, which zeroes the padding
        data.inputs["s"][np.arange(3)[None, :] >= steps[:, None]] = -1e3
    return data


def test_a_variable_length_sequence_is_scored_on_its_valid_steps_only():
    data = tiny_padded(garbage=False)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(
        GarbagePaddingFill(data.specs, data.task), data
    )
    # every s hidden and filled with 1 on its valid steps: squared errors by hand, row by row,
    # (1-2)^2 | 1, 0 | 0, 0, 9 | 4 | 0, 1 | 1, 0, 0 = 17 over 12 valid steps; the 6 padded
    # steps (truth 0, guess 1e3) are not data
    for garbage in (False, True):
        table = imputation_scores(trained, tiny_padded(garbage), "fixed:-s", seed=0)
        row = table[(table.subset == "s") & (table.metric == "nrmse")]
        assert row.n.item() == 6
        assert row.value.item() == pytest.approx(np.sqrt(17 / 12), rel=1e-6)
    assert set(table.subset) == {"s", "all"}  # a is never hidden


def hidden_errors(trained, test, hide, seed=0):
    """The method's imputations minus the true standardised values of hidden ``s`` rows
    ``[k, T, C]``, with each hidden row's valid steps ``[k]``."""
    masked, result = mlmm.simulate(test, hide, rng_for(seed, "imputation-mask", hide))
    truth = trained.standardizer.transform(test).inputs["s"]
    batch = mlmm.MultimodalBatch.from_dataset(
        trained.standardizer.transform(masked), with_target=False
    )
    with torch.no_grad():
        filled = trained.model.eval().impute(batch)["s"].numpy()
    hidden = result.removed[:, test.modality_names.index("s")]
    return filled[hidden] - truth[hidden], test.lengths["s"][hidden]


def nrmse_of(table, name):
    return table[(table.subset == name) & (table.metric == "nrmse")].value.item()


def test_mean_impute_nrmse_is_about_one_on_the_valid_steps_of_padded_data():
    # s: 1 to 8 valid steps of N(class, 1) noise, so the per-step training mean is all that an
    # imputer without the other modality's information knows: NRMSE about 1 on valid steps.
    # Counting the padding (truth 0, the mean about 0 there too) pulled it to about 0.8.
    rng = np.random.default_rng(3)
    n = 400
    y = np.arange(n) % 2
    data = mlmm.MultimodalDataset(
        [mlmm.ModalitySpec("a", "vector", (3,)), mlmm.ModalitySpec("s", "sequence", (8, 2))],
        mlmm.TaskSpec("classification", 2),
        {
            "a": rng.normal(size=(n, 3)) + y[:, None],
            "s": rng.normal(size=(n, 8, 2)) + y[:, None, None],
        },
        y,
        lengths={"s": rng.integers(1, 9, size=n)},
    )
    split = mlmm.train_val_test_split(data, seed=0)
    model = mlmm.create_method("mean-impute", data.specs, data.task)
    trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, split.train, split.val)
    table = imputation_scores(trained, split.test, "mcar:0.4", seed=0)
    err, steps = hidden_errors(trained, split.test, "mcar:0.4")
    valid = np.arange(8)[None, :] < steps[:, None]  # [k, T]
    assert nrmse_of(table, "s") == pytest.approx(np.sqrt(np.mean(err[valid] ** 2)), rel=1e-6)
    assert abs(nrmse_of(table, "s") - 1) < 0.1
    assert np.sqrt(np.mean(err**2)) < 0.9  # what counting the padding gave


def test_mopoe_scores_on_padded_data_do_not_read_the_padding():
    # the same samples with garbage (1e3) in the padding of present sequences: same table
    tables = []
    for garbage in (False, True):
        split = mlmm.train_val_test_split(padded_sequence_dataset(garbage=garbage), seed=0)
        model = mlmm.create_method("mopoe", split.train.specs, split.train.task)
        trained = mlmm.Trainer(max_epochs=2, progress=False, seed=0).fit(
            model, split.train, split.val
        )
        tables.append(imputation_scores(trained, split.test, "fixed:-s", seed=0))
    err, steps = hidden_errors(trained, split.test, "fixed:-s")
    valid = np.arange(8)[None, :] < steps[:, None]  # [k, T]
    assert (steps < 8).any()  # some hidden rows are padded
    expected = np.sqrt(np.mean(err[valid] ** 2))
    assert nrmse_of(tables[1], "s") == pytest.approx(expected, rel=1e-6)
    assert nrmse_of(tables[1], "s") != pytest.approx(np.sqrt(np.mean(err**2)), rel=1e-3)
    assert tables[0].equals(tables[1])


def test_a_model_with_nan_outputs_has_no_downstream_accuracy():
    imputer, _, test = trained_pair()
    with torch.no_grad():
        for parameter in imputer.model.parameters():
            parameter.fill_(float("nan"))  # a diverged model
    table = imputation_scores(imputer, test, "mcar:0.5", seed=0).set_index("metric").value
    # argmax over NaN answered class 0 for every sample: the share of class 0, not NaN
    assert np.isnan(table["accuracy_imputed"]) and np.isnan(table["accuracy_true"])
