"""The imputation score: hidden slots, NRMSE in standardised units, downstream accuracy."""

import numpy as np
import pytest
import torch

import mlmm
from mlmm.errors import MlmmError
from mlmm.eval.imputation import imputation_scores
from mlmm.methods.imputation.zero_impute import ZeroImpute
from mlmm.testing import contract_dataset
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
