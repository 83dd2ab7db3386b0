"""One experiment end to end: split → train missingness → train → test conditions → tidy table."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlmm.data.dataset import MultimodalDataset
from mlmm.data.datasets import load_dataset
from mlmm.data.missingness import MaskResult, parse_condition, simulate
from mlmm.data.split import Split, train_val_test_split
from mlmm.errors import MlmmError
from mlmm.eval.imputation import imputation_hide, imputation_scores
from mlmm.eval.protocol import evaluate
from mlmm.methods.registry import create_method
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import (
    Trainer,
    check_precision,
    check_precision_device,
    check_trainer_params,
)
from mlmm.utils import resolve_device, rng_for

#: Monte Carlo draws per class of the Bayes posterior under MNAR (its accuracy's standard
#: error on synthetic test parts is then a few hundredths of a point).
MNAR_MC_DRAWS = 2000


@dataclass
class ExperimentResult:
    """The trained model, its tidy test table and what the masks and split were.

    Attributes
    ----------
    trained : TrainedModel
    table : pandas.DataFrame
        :func:`mlmm.evaluate`'s table plus ``dataset, method, train_condition, seed`` columns;
        for imputation methods also :func:`mlmm.eval.imputation_scores` rows (scope
        ``imputation``: NRMSE per modality with 50% of present test slots hidden, or half the
        reachable rate where 50% is out of reach, e.g. 25% on two modalities; none on one
        modality, see :func:`mlmm.eval.imputation.imputation_hide`).
    train_mask : MaskResult
        The training missingness as realised (rates per modality, rate unit).
    split : dict of str to ndarray
        Row indices of the train/val/test parts in the loaded dataset.
    reference : pandas.DataFrame or None
        The same table for the Bayes-optimal classifier, on datasets that expose one
        (``synthetic``, ``synthetic-interaction``, ``synthetic-multilabel``), scored under
        exactly the same test masks. Under an MNAR test
        condition it is ``p(y | x_obs, R)`` by Monte Carlo (the presence pattern is evidence
        there), with the Monte Carlo standard error of its accuracy in an extra row (metric
        ``accuracy_mc_se``; ``macro_auroc_mc_se`` for ``synthetic-multilabel``); a generator
        without that posterior (``synthetic-interaction``, ``synthetic-multilabel`` with more
        than 8 labels) gets no reference rows for an MNAR condition, and
        ``synthetic-multilabel`` with more than 16 labels none at all (None); a one-line
        ``UserWarning`` says why in both cases.
    latency_ms_per_sample : float
        Wall time of one prediction pass over the full-modality test part, per sample.
    failed_conditions : dict of str to str
        Test conditions that could not be simulated on the test part, with their errors; the
        other conditions were scored.
    """

    trained: TrainedModel
    table: pd.DataFrame
    train_mask: MaskResult
    split: dict[str, np.ndarray]
    reference: pd.DataFrame | None = None
    latency_ms_per_sample: float = float("nan")
    failed_conditions: dict[str, str] = field(default_factory=dict)


class BayesOracle:
    """Adapter giving a dataset's exact Bayes posterior the ``predict_raw`` interface.

    Class probabilities ``[N, K]`` for a classification task; for a multi-label task, each
    label's posterior ``p(y_l = 1 | x_obs)`` (``[N, L]``,
    :meth:`~mlmm.data.datasets.synthetic_multilabel.MultilabelGenerator.label_posterior`).

    With ``mnar_law`` (an :class:`~mlmm.data.missingness.mnar.MNARLaw` fitted on the complete
    test data), the posterior also conditions on the presence pattern, by Monte Carlo
    (:meth:`~mlmm.data.datasets.synthetic.SyntheticGenerator.log_posterior_mnar`).
    """

    def __init__(self, generator: Any, task, mnar_law: Any = None) -> None:
        self.generator, self.task, self.mnar_law = generator, task, mnar_law

    def predict_raw(self, dataset: MultimodalDataset, on_empty: str = "error") -> np.ndarray:
        if self.task.is_multilabel:  # each label's marginal posterior, [N, L]
            if self.mnar_law is None:
                return self.generator.label_posterior(dataset.inputs, dataset.observed)
            return self.generator.label_posterior_mnar(
                dataset.inputs, dataset.observed, self.mnar_law, n_mc=MNAR_MC_DRAWS
            )
        if self.mnar_law is None:
            logp = self.generator.log_posterior(dataset.inputs, dataset.observed)
        else:
            logp = self.generator.log_posterior_mnar(
                dataset.inputs, dataset.observed, self.mnar_law, n_mc=MNAR_MC_DRAWS
            )
        logp = logp - logp.max(axis=1, keepdims=True)
        proba = np.exp(logp)
        return proba / proba.sum(axis=1, keepdims=True)


def resolve_dataset(
    dataset: str | MultimodalDataset, dataset_params: dict[str, Any] | None
) -> tuple[str, MultimodalDataset]:
    """``(name, dataset)`` of a registered dataset's name (loaded with ``dataset_params``) or
    of a :class:`MultimodalDataset` given as it is; anything else is a one-line error."""
    if isinstance(dataset, str):
        return dataset, load_dataset(dataset, **(dataset_params or {}))
    if isinstance(dataset, MultimodalDataset):
        if dataset_params:
            raise MlmmError("dataset_params only apply to a dataset given by name")
        return dataset.name, dataset
    raise MlmmError(f"dataset must be a name or a MultimodalDataset, got {type(dataset).__name__}")


def make_split(
    data: MultimodalDataset, split: str, seed: int, test_size: float, val_size: float
) -> tuple[Split, dict[str, Any]]:
    """The parts a run trains, validates and scores on, and how they were made (stored with
    the model): ``"random"``, a seeded stratified split (by whole groups when the dataset has
    ``groups``); ``"official"``, the data set's own parts (``meta["official_split"]``)."""
    if split == "official":
        from mlmm.data.formats import official_split

        return official_split(data), {"seed": seed, "official": True}
    if split == "random":
        parts = train_val_test_split(data, test_size=test_size, val_size=val_size, seed=seed)
        return parts, {"seed": seed, "test_size": test_size, "val_size": val_size}
    raise MlmmError(f"split must be 'random' or 'official', got {split!r}")


def run_experiment(
    dataset: str | MultimodalDataset,
    method: str,
    *,
    method_params: dict[str, Any] | None = None,
    dataset_params: dict[str, Any] | None = None,
    missing: str = "none",
    test_missing: str | list[str] | None = None,
    seed: int = 0,
    test_size: float = 0.2,
    val_size: float = 0.1,
    trainer: Trainer | dict[str, Any] | None = None,
    subsets: bool = True,
    split: str = "random",
) -> ExperimentResult:
    """Train ``method`` on ``dataset`` under ``missing`` and score it under ``test_missing``.

    Parameters
    ----------
    dataset : str or MultimodalDataset
        A registered name (``"handwritten"``) or a dataset.
    method : str
        A registered method name, or ``"auto"`` (:func:`mlmm.tune.auto.fit_auto`, trained on
        the training and validation parts together; ``method_params`` are its arguments).
    missing : str
        Training (and validation) missingness, or ``"TRAIN=>TEST"`` for a train/test mismatch
        (``"none=>mcar:0.5"`` trains on full data and tests with half the slots missing).
    test_missing : str or list of str, optional
        Test conditions (a robustness curve); default: the test side of ``missing``.
    seed : int
        Seeds the split, every mask (each from its own stream) and the training.
    trainer : Trainer or dict, optional
        A trainer, or keyword arguments for one (its seed is set to ``seed``), e.g.
        ``{"device": "cuda", "precision": "bf16-mixed"}``; the precision the model trained
        in is ``result.trained.precision``.
    split : {"random", "official"}
        ``"random"``: a seeded stratified split (``test_size``, ``val_size``; by whole groups
        when the dataset has ``groups``). ``"official"``: the data set's own parts, from
        ``meta["official_split"]`` (a file-format loader with ``split=None``, or
        ``basicmotions``), as the papers train and score; ``test_size`` and ``val_size`` are
        then unused.

    Examples
    --------
    >>> import mlmm
    >>> res = mlmm.run_experiment("synthetic", "hemis", dataset_params={"n_samples": 500},
    ...                           missing="mcar:0.5", trainer={"max_epochs": 5, "progress": False})
    >>> sorted(res.table["scope"].unique())
    ['overall', 'pattern', 'subset']
    """
    if isinstance(trainer, Trainer):
        trainer.seed = seed
    else:  # before loading the data: a bad trainer option (precision...) fails at once
        check_trainer_params(trainer)
        trainer = Trainer(**{"seed": seed, **(trainer or {})})
    # a CUDA request without a GPU, or 16-mixed off CUDA, fails here in one line, not after
    # loading the data
    check_precision_device(check_precision(trainer.precision), resolve_device(trainer.device))
    if method == "auto":  # its options too: fit_auto would raise TypeError after the loading
        from mlmm.tune.auto import check_auto_options

        check_auto_options(method_params)
        if trainer.checkpoint_dir is not None:  # its members train with trainers of their own
            raise MlmmError(
                f"method 'auto' trains many members and resumes from its fold cache, not from "
                f"a training checkpoint, got checkpoint_dir={str(trainer.checkpoint_dir)!r}; "
                f"drop it and pass method_params={{'cache_dir': ...}}"
            )
    name, data = resolve_dataset(dataset, dataset_params)
    condition = parse_condition(missing)
    split, split_info = make_split(data, split, seed, test_size, val_size)
    if split.test is None:
        raise MlmmError("run_experiment needs a test part; use test_size > 0")
    indices = split.indices
    if method == "auto":  # its inner cross-validation uses the validation rows for training
        rows = np.sort(np.concatenate([indices["train"], indices.get("val", indices["train"][:0])]))
        indices = {**indices, "train": rows, "val": rows[:0]}
        split = split._replace(train=data.subset(rows), val=None)
    train, train_mask = simulate(split.train, condition.train, rng_for(seed, "train-mask"))
    val = None
    if split.val is not None:
        val, _ = simulate(split.val, condition.train, rng_for(seed, "val-mask"))
    info = {
        "dataset": name,
        "dataset_params": dataset_params or {},
        "split": split_info,
        "missing": condition.to_string(),
        "train_mask": train_mask.to_dict(),
    }
    if method == "auto":
        from mlmm.tune.auto import check_auto_precision, fit_auto

        check_auto_precision(trainer.precision)
        trained = fit_auto(
            train,
            **{
                "seed": seed,
                "batch_size": trainer.batch_size,
                "lr": trainer.lr,
                "device": trainer.device,
                "progress": trainer.progress,
                "info": info,
                **(method_params or {}),
            },
        )
    else:
        model = create_method(method, data.specs, data.task, **(method_params or {}))
        trained = trainer.fit(model, train, val, info=info)
    if val is not None:
        val_table = evaluate(trained, split.val, "none", seed=seed, patterns=False)
        trained.validation = {
            f"{r.subset}/{r.metric}": r.value for r in val_table.itertuples() if r.scope == "subset"
        }
    t0 = time.perf_counter()
    trained.predict_raw(split.test)
    latency = 1000 * (time.perf_counter() - t0) / len(split.test)
    tests = test_missing if test_missing is not None else condition.test.to_string()
    # a condition the test part cannot take is recorded; the others keep their scores
    table = evaluate(trained, split.test, tests, seed=seed, subsets=subsets, errors="record")
    failed = dict(table.attrs.get("failed_conditions", {}))
    if failed and not (table.scope == "overall").any():
        raise MlmmError(f"no test condition could be simulated on the test part: {failed}")
    imputes = getattr(type(trained.model), "imputes", False)
    hide = imputation_hide(split.test) if imputes else None
    if hide is not None:
        # imputation methods are also scored on what they fill in (same tidy table); mcar:0.5
        # is out of reach on two modalities, where half the reachable rate is hidden instead
        table = pd.concat(
            [table, imputation_scores(trained, split.test, hide, seed=seed)],
            ignore_index=True,
        )
    ids = {
        "dataset": name,
        "method": method,
        "train_condition": condition.to_string(),
        "seed": seed,
    }
    reference = None
    generator = data.meta.get("generator")
    if generator is not None and (data.task.is_classification or data.task.is_multilabel):
        if getattr(generator, "exact_posterior", True):
            reference = _bayes_reference(generator, data.task, split.test, tests, seed, subsets)
            reference = reference.assign(**{**ids, "method": "bayes-optimal"})
        else:  # synthetic-multilabel past MAX_EXACT_LABELS: say why, not a silent None
            from mlmm.data.datasets.synthetic_multilabel import MAX_EXACT_LABELS

            warnings.warn(
                f"{name} has no Bayes-optimal reference: its exact posterior sums over "
                f"2^n_labels label vectors and is computed for at most {MAX_EXACT_LABELS} "
                f"labels, got {generator.n_labels}; use fewer labels for one",
                UserWarning,
                stacklevel=2,
            )
    return ExperimentResult(
        trained, table.assign(**ids), train_mask, indices, reference, latency, failed
    )


def _bayes_reference(
    generator: Any,
    task: Any,
    test: MultimodalDataset,
    tests: str | list[str],
    seed: int,
    subsets: bool,
) -> pd.DataFrame:
    """The Bayes-optimal classifier's table under the same masks as the method's.

    Ignorable conditions (and forced subsets) use the exact posterior. An MNAR condition's
    rows come from the Monte Carlo posterior ``p(y | x_obs, R)`` under the law that drew the
    mask, plus an ``accuracy_mc_se`` row (the Monte Carlo standard error of its accuracy;
    ``macro_auroc_mc_se``, of its macro AUROC, for a multi-label task).
    """
    from mlmm.data.datasets.synthetic import mnar_bayes_accuracy
    from mlmm.data.datasets.synthetic_multilabel import mnar_bayes_auroc
    from mlmm.data.missingness import parse_missingness, split_specs
    from mlmm.data.missingness.mnar import MNAR

    table = evaluate(
        BayesOracle(generator, task), test, tests, seed=seed, subsets=subsets, errors="record"
    )
    specs = split_specs(tests) if isinstance(tests, str) else list(tests)
    parts = [table]
    for spec in specs:
        model = parse_missingness(spec)
        name = model.to_string()
        if (
            not isinstance(model, MNAR)
            or model.rate == 0
            or name in table.attrs["failed_conditions"]
        ):
            continue
        if not getattr(generator, "mnar_posterior", hasattr(generator, "log_posterior_mnar")):
            # no MNAR posterior for this generator (synthetic-interaction; synthetic-multilabel
            # with many labels): the ignorable one is not Bayes-optimal there, so the condition
            # gets no reference rather than a wrong one
            parts[0] = parts[0][parts[0].condition != name]
            warnings.warn(
                f"{test.name} has no Bayes-optimal reference under {name}: {_no_mnar(generator)}",
                UserWarning,
                stacklevel=3,  # run_experiment's caller
            )
            continue
        law = model.fit_law(test)
        rows = evaluate(BayesOracle(generator, task, law), test, [name], seed=seed, subsets=False)
        masked, _ = simulate(test, model, rng_for(seed, "test-mask", name))  # evaluate's mask
        if task.is_multilabel:  # the error of the metric the posterior is optimal for
            _, error = mnar_bayes_auroc(masked, law, n_mc=MNAR_MC_DRAWS, seed=0)
            error_metric = "macro_auroc_mc_se"
        else:
            _, error = mnar_bayes_accuracy(masked, law, n_mc=MNAR_MC_DRAWS, seed=0)
            error_metric = "accuracy_mc_se"
        overall = rows[(rows.scope == "overall")].iloc[:1]
        rows = pd.concat(
            [rows, overall.assign(metric=error_metric, value=error)], ignore_index=True
        )
        parts[0] = parts[0][~((parts[0].condition == name) & (parts[0].scope != "subset"))]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def _no_mnar(generator: Any) -> str:
    """Why ``generator`` has no posterior given an MNAR presence pattern."""
    from mlmm.data.datasets.synthetic_multilabel import MAX_MNAR_LABELS, MultilabelGenerator

    if isinstance(generator, MultilabelGenerator):
        return (
            f"its MNAR posterior is computed for at most {MAX_MNAR_LABELS} labels, got "
            f"{generator.n_labels}; use fewer labels for one"
        )
    return (
        "its posterior given the presence pattern is not computed, and the ignorable one is "
        "not Bayes-optimal under MNAR"
    )
