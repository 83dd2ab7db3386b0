"""Imputation score: hide modalities that are present, impute them, measure the error.

For methods that impute inputs (``imputes = True``): on test data, a seeded MCAR mask hides a
fraction of the present (sample, modality) slots; the method fills them from what is left,
and the normalised RMSE is measured per modality against the true values — in the model's
standardised input space, so it is the RMSE in units of each feature's training standard
deviation (filling with the training mean gives about 1). For a variable-length sequence
(a dataset with ``lengths``) only the valid steps of each hidden row count, for the true and
the imputed values alike: the padding is not data, so neither its zeros nor what a method
writes there enter the error (and the standardisation that sets the units was fitted on
valid steps only). For classification the accuracy of the model's own classifier on the
imputed inputs is reported beside its accuracy on the true (unhidden) inputs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.missingness import simulate
from mlmm.errors import MlmmError
from mlmm.eval.metrics import classification_metrics
from mlmm.train.trained import TrainedModel
from mlmm.utils import rng_for

COLUMNS = ["scope", "condition", "subset", "n", "metric", "value"]

#: What :func:`imputation_hide` hides when the data can lose that many slots.
DEFAULT_HIDE_RATE = 0.5


def imputation_hide(dataset: MultimodalDataset) -> str | None:
    """The MCAR spec that ``run_experiment`` hides for the imputation score of ``dataset``.

    ``mcar:0.5`` while half of the observed slots can go with one modality kept per sample
    (three or more modalities); otherwise half the reachable maximum, e.g. ``mcar:0.25`` on
    two fully observed modalities, whose maximum 0.5 is approached but never reached. None
    when nothing can be hidden (one modality): there is then no imputation score.
    """
    from mlmm.data.missingness.calibration import max_rate

    observed = np.asarray(dataset.observed, dtype=bool)  # [N, M]
    most = max_rate(np.ones_like(observed), observed, "slots", False, np.ones(len(observed)))
    if most > DEFAULT_HIDE_RATE + 1e-9:
        return f"mcar:{DEFAULT_HIDE_RATE:g}"
    rate = float(np.floor(100 * most / 2) / 100)
    return f"mcar:{rate:g}" if rate > 0 else None


@torch.no_grad()
def imputation_scores(
    trained: TrainedModel, dataset: MultimodalDataset, hide: str = "mcar:0.5", seed: int = 0
) -> pd.DataFrame:
    """Normalised RMSE per modality of a method's imputations, plus downstream accuracy.

    Parameters
    ----------
    trained : TrainedModel
        Its method must impute (``imputes = True``).
    dataset : MultimodalDataset
        Raw test data; only its present slots are hidden and scored. With ``lengths``, a
        hidden sequence is scored on its own valid steps (``step < lengths[name][i]``).
    hide : str
        Missingness spec for what to hide (seeded from ``seed`` and the spec).

    Returns
    -------
    pandas.DataFrame
        Columns ``scope`` ("imputation"), ``condition`` (the hide spec), ``subset`` (modality
        name, or "all"), ``n`` (hidden rows, or samples), ``metric`` (``nrmse``;
        ``accuracy_imputed`` and ``accuracy_true`` for classification, NaN when the model's
        outputs are not finite), ``value``. The NRMSE
        pools the squared errors of every scored entry of the modality's hidden rows (every
        feature; for a variable-length sequence, every channel of the valid steps).
    """
    model = trained.model
    if not getattr(type(model), "imputes", False):
        raise MlmmError(
            f"method {trained.method!r} does not impute inputs; imputation scores exist for "
            f"imputation methods only (see `mlmm methods --family imputation`)"
        )
    masked, result = simulate(dataset, hide, rng_for(seed, "imputation-mask", hide))
    true_data = trained.standardizer.transform(dataset)
    data = trained.standardizer.transform(masked)
    device = next(model.parameters()).device
    model.eval()
    filled = model.impute(MultimodalBatch.from_dataset(data, with_target=False).to(device))
    lengths = dataset.lengths or {}
    rows = []
    for j, name in enumerate(dataset.modality_names):
        hidden = result.removed[:, j]
        if not hidden.any():
            continue
        truth = true_data.inputs[name][hidden]  # [k, *shape]
        guess = filled[name].cpu().numpy()[hidden]  # [k, *shape]
        if name in lengths:  # padded steps are not data: score the valid ones only
            steps = lengths[name][hidden]  # [k], >= 1 (hidden rows were present)
            valid = np.arange(truth.shape[1])[None, :] < steps[:, None]  # [k, T]
            truth, guess = truth[valid], guess[valid]  # [valid steps, C]
        else:
            truth, guess = truth.reshape(hidden.sum(), -1), guess.reshape(hidden.sum(), -1)
        nrmse = float(np.sqrt(np.mean((guess - truth) ** 2)))
        rows.append(("imputation", result.spec, name, int(hidden.sum()), "nrmse", nrmse))
    if trained.task.is_classification:
        # class indices, as the targets are (predict gives the training labels); the accuracy
        # of classification_metrics, so NaN outputs are NaN, not class 0
        acc_imputed = classification_metrics(trained.predict_raw(masked), dataset.targets)
        acc_true = classification_metrics(trained.predict_raw(dataset), dataset.targets)
        acc_imputed, acc_true = acc_imputed["accuracy"], acc_true["accuracy"]
        n = dataset.n_samples
        rows.append(("imputation", result.spec, "all", n, "accuracy_imputed", acc_imputed))
        rows.append(("imputation", result.spec, "all", n, "accuracy_true", acc_true))
    return pd.DataFrame(rows, columns=COLUMNS)
