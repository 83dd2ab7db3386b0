"""``method="auto"``: a portfolio chosen by inner cross-validation, greedy ensemble selection, refit.

:func:`fit_auto` is what ``MissingModalityClassifier(method="auto")``,
``MissingModalityRegressor(method="auto")``, ``mlmm train --method auto`` and a benchmark spec's
``auto`` method run. On the *training* data only:

1. **Portfolio** (:func:`default_portfolio`): the reference baselines (logistic regressions at
   two penalties, Gaussian discriminant analysis by EM, gradient-boosted trees) and a few deep
   methods (``late-fusion``, ``hemis``, ``masked-attention``, ``moddrop``), more of them as the
   budget grows. A member that cannot run on the data (``lda-em`` on wide images) is skipped
   with a note.
2. **Inner k-fold cross-validation**: every member is trained on k-1 folds and predicts the
   held-out fold, giving out-of-fold predictions for every training sample. Deep members
   early-stop on the held-out fold; the epoch where each fold's validation loss was lowest is
   recorded and the member's epoch count is their median.
3. **Bagged greedy ensemble selection with replacement** (Caruana et al., ICML 2004) on the
   out-of-fold predictions: ``rounds`` times, add the member (again, if it is already in) that
   most lowers the log loss (classification) or mean squared error (regression) of the running
   average; the weights are the counts over ``rounds``. This runs ``bags`` times on a random
   half of the members and the weights are averaged (the paper's section 4.3), which keeps
   the selection from overfitting the out-of-fold predictions of a few hundred samples.
   From :data:`ANCHOR_MIN_ROWS` out-of-fold rows on, a member whose log loss clearly leads
   the rest and whose accuracy is the highest (:func:`dominant_member`) is in every bag, so
   bagging does not dilute it.
4. **Refit**: every member with a positive weight is trained once more on all training data,
   deep members for exactly their chosen epoch count (no validation split is carved off), and
   the result is one ``auto-ensemble`` model (:class:`~mlmm.methods.combination.auto_ensemble.
   AutoEnsemble`) in a :class:`~mlmm.train.TrainedModel`: one artifact, any modality subset.

Small data: with a few hundred samples, early stopping on a 10% split picks its epoch from a
few dozen samples. Here each of the k folds holds 1/k of the data and the median over folds
fixes the epoch count, and the final model trains on every sample. The deep members' AdamW
weight decay scales as ``1 / n``: decoupled weight decay acts on every step whatever ``n`` is,
while a Gaussian prior's weight against the mean training loss falls as ``1 / n``
(:func:`scaled_weight_decay`). The logistic members need no such rule: scikit-learn's ``C``
multiplies the *summed* loss, so the penalty already weighs ``1 / n`` against the mean;
their two ``C`` values are chosen between by the cross-validation.

Resuming: with ``cache_dir``, every finished (member, fold) result and every refitted member
is written there atomically, keyed by a hash of the data, the member and the settings (a fold's
result is read back only for the same held-out rows). A run killed at any point (``kill -9``
included) and started again reuses all of them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.preprocessing import Standardizer, absent_modality_error
from mlmm.errors import MlmmError, did_you_mean
from mlmm.methods.base import check_range
from mlmm.methods.combination.auto_ensemble import AutoEnsemble, fit_member, member_label
from mlmm.methods.registry import METHODS, create_method, method_hyperparameters
from mlmm.train.checkpoint import load_artifact, save_artifact
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer, TrainHistory, _nonempty, _prior, check_precision
from mlmm.utils import atomic_write, derive_seed

#: What each budget means: folds of the inner cross-validation, the deep members' epoch cap
#: and early-stopping patience, the ensemble-selection rounds and bags, which deep methods
#: join, and the largest gradient-boosting cost (flattened features x classes) it accepts
#: (0: no trees).
BUDGETS: dict[str, dict[str, Any]] = {
    "fast": {
        "folds": 3,
        "max_epochs": 60,
        "patience": 8,
        "rounds": 25,
        "bags": 20,
        "deep": ("late-fusion", "hemis"),
        "max_tree_cost": 0,
    },
    "medium": {
        "folds": 5,
        "max_epochs": 100,
        "patience": 10,
        "rounds": 50,
        "bags": 20,
        "deep": ("late-fusion", "hemis", "masked-attention"),
        "max_tree_cost": 2000,
    },
    "best": {
        "folds": 5,
        "max_epochs": 300,
        "patience": 20,
        "rounds": 50,
        "bags": 20,
        "deep": ("late-fusion", "hemis", "masked-attention", "moddrop"),
        "max_tree_cost": 50000,
    },
}
#: From this many training samples on, at most 3 folds: every held-out fold then has 1,600 or
#: more samples, enough to score and early-stop on, and each fold costs a full training.
LARGE_DATA = 5000
#: Weight decay of the deep members is ``WEIGHT_DECAY_PER_SAMPLE / n``, kept in this range.
WEIGHT_DECAY_PER_SAMPLE = 0.5
WEIGHT_DECAY_RANGE = (1e-4, 1e-2)
#: ``lda-em`` shrunk towards the diagonal of its covariance joins the portfolio only with at
#: least this many training samples per flattened feature (see :func:`default_portfolio`).
DIAGONAL_LDA_SAMPLES_PER_FEATURE = 10
#: The shrinkage of each such ``lda-em`` member (one member per value).
DIAGONAL_LDA_SHRINKAGES: tuple[float, ...] = (0.7,)
#: The bagged selection anchors its bags on a dominant member only when it selects on at
#: least this many out-of-fold rows (:func:`dominant_member`; the fifth design round).
ANCHOR_MIN_ROWS = 500
#: The kernel member joins the portfolio from this many training samples on (the seventh
#: design round gated it at :data:`ANCHOR_MIN_ROWS`; see :func:`default_portfolio`).
KERNEL_MIN_SAMPLES = ANCHOR_MIN_ROWS
#: That member: per-modality Nyström RBF kernel logistic regressions, product rule, each
#: modality's ``C`` chosen by its own inner cross-validation (the eighth design round) from
#: {1, 3, ..., 1000} (the ninth: where 100 was chosen the held-out loss was still falling).
KERNEL_MEMBER: dict[str, Any] = {
    "method": "per-modality-kernel",
    "params": {"C": "cv", "C_grid": [1, 3, 10, 30, 100, 300, 1000]},
}
#: A member is dominant when its log loss leads the runner-up's by at least this many standard
#: errors of their paired per-row difference (:func:`dominant_member`).
DOMINANCE_Z = 2.0
_EPS = 1e-15


def scaled_weight_decay(n_samples: int) -> float:
    """AdamW weight decay for ``n_samples`` training samples: ``0.5 / n`` within [1e-4, 1e-2].

    About 2.5e-3 at 200 samples, 5e-4 at 1,000, 1e-4 (the trainer's default) from 5,000 on.
    """
    low, high = WEIGHT_DECAY_RANGE
    return float(min(high, max(low, WEIGHT_DECAY_PER_SAMPLE / max(n_samples, 1))))


def default_portfolio(
    data: MultimodalDataset, budget: str = "medium"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The candidate members for ``data`` at ``budget``, and notes on those left out.

    Returns ``(members, notes)``: members as ``{"method", "params", "weight_decay"}`` dicts (the
    deep ones with the weight decay :func:`scaled_weight_decay` gives for ``data``), and one
    ``{"model", "method", "note"}`` row per candidate left out before training.

    ``lda-em`` with ``shrinkage_target="diagonal"`` (at each of
    :data:`DIAGONAL_LDA_SHRINKAGES`) joins only with at least
    :data:`DIAGONAL_LDA_SAMPLES_PER_FEATURE` training samples per flattened feature: its
    pooled covariance has ``D (D + 1) / 2`` entries, and with ``D / n = g`` the sample
    covariance's eigenvalues spread over about ``[(1 - sqrt(g))^2, (1 + sqrt(g))^2]`` times
    the true ones (Marchenko-Pastur); at ``g <= 0.1`` that is within a factor of about 2 either
    way, where shrinking part of it towards its own diagonal is sound. With fewer samples the
    diagonal itself is estimated poorly under missing modalities and the member is
    overconfident; the isotropic ``lda-em`` stays.

    :data:`KERNEL_MEMBER` (``per-modality-kernel``, RBF, ``C="cv"``: each modality's ``C``
    from 1 to 1,000 by 3-fold inner cross-validation) joins last, after the deep members,
    with at least :data:`KERNEL_MIN_SAMPLES` training samples: on 1,600-row ``handwritten``
    it lowered the out-of-fold log loss, on 200 rows it raised it (the sixth and seventh
    design rounds, and again with the per-modality ``C`` at 200 and 300 rows in the ninth;
    the per-modality ``C``, the eighth; its grid, the ninth; docs/auto.md).
    """
    settings = _budget(budget)
    width = sum(math.prod(s.shape) for s in data.specs)
    members: list[dict[str, Any]] = [
        {"method": "per-modality-logistic", "params": {"C": 1.0}},
        {"method": "per-modality-logistic", "params": {"C": 0.1}},
        {"method": "logistic-mean-impute", "params": {"C": 1.0}},
        {"method": "logistic-mean-impute", "params": {"C": 0.1}},
        {"method": "lda-em", "params": {}},
    ]
    notes = []
    needed = DIAGONAL_LDA_SAMPLES_PER_FEATURE * width
    for shrinkage in DIAGONAL_LDA_SHRINKAGES:
        member = {
            "method": "lda-em",
            "params": {"shrinkage": shrinkage, "shrinkage_target": "diagonal"},
        }
        if data.n_samples >= needed:
            members.append(member)
        else:
            notes.append(
                _note(
                    member,
                    f"needs {DIAGONAL_LDA_SAMPLES_PER_FEATURE} samples per feature "
                    f"({needed} for {width} features), got {data.n_samples}",
                )
            )
    outputs = data.task.n_classes if data.task.is_classification else 1
    cost = width * outputs
    if cost <= settings["max_tree_cost"]:
        members.append({"method": "hist-gradient-boosting", "params": {}})
    else:
        why = f"{width} features x {outputs} outputs = {cost}"
        limit = settings["max_tree_cost"]
        notes.append(
            _note(
                {"method": "hist-gradient-boosting"},
                f"not in budget {budget!r}"
                if limit == 0
                else f"too costly for budget {budget!r} ({why} > {limit})",
            )
        )
    decay = scaled_weight_decay(data.n_samples)
    for name in settings["deep"]:
        members.append({"method": name, "params": {}, "weight_decay": decay})
    kernel = json.loads(json.dumps(KERNEL_MEMBER))  # a copy: its grid is a list
    if data.n_samples >= KERNEL_MIN_SAMPLES:
        members.append(kernel)
    else:
        why = f"needs {KERNEL_MIN_SAMPLES} training samples, got {data.n_samples}"
        notes.append(_note(kernel, why))
    return members, notes


#: :func:`fit_auto`'s keywords that its callers (the estimator, :func:`mlmm.run_experiment`)
#: pass from their own settings: refused among the options by :func:`check_auto_options`.
CALLER_OPTIONS = ("seed", "batch_size", "lr", "device", "info")


def check_auto_options(
    options: Mapping[str, Any] | None, given_by: Sequence[str] = CALLER_OPTIONS
) -> None:
    """Refuse, in one line, an option :func:`fit_auto` does not take (where the call would
    raise ``TypeError``), or one the caller sets itself (``given_by``: e.g. the estimator's
    ``random_state`` is the seed), before any training.

    Parameters
    ----------
    options : mapping, optional
        The options given for ``method="auto"`` (``method_params``, ``--param``).
    given_by : sequence of str, default :data:`CALLER_OPTIONS`
        Names of :func:`fit_auto` keywords that the caller passes from its own settings.
    """
    accepted = [k for k in inspect.signature(fit_auto).parameters if k not in ("train", *given_by)]
    for key in options or {}:
        if key in given_by:
            raise MlmmError(
                f"method 'auto' takes {key!r} from the caller's own setting, not from its "
                f"options; set it there (the estimator's random_state, batch_size, lr or "
                f"device; mlmm train's --seed, --batch-size, --lr or --device)"
            )
        if key not in accepted:
            raise MlmmError(
                f"method 'auto' has no option {key!r}.{did_you_mean(str(key), accepted)}"
            )


def check_every_modality_seen(data: MultimodalDataset) -> None:
    """Refuse, in one line, training data in which a modality is absent from every row: no
    member could standardise or learn it (the message :class:`Standardizer` gives)."""
    seen = np.asarray(data.observed).any(axis=0)  # [M]
    for name, present in zip(data.modality_names, seen, strict=True):
        if not present:
            raise absent_modality_error(name)


def check_folds_see_every_modality(
    data: MultimodalDataset, splits: Sequence[tuple[np.ndarray, np.ndarray]], what: str
) -> None:
    """Refuse, in one line, folds whose training part holds no row of some modality (a
    modality present in a handful of rows, all held out together): every member or trial
    would fail on that fold alike. ``what`` names the folds in the message."""
    observed = np.asarray(data.observed)  # [N, M]
    for fold, (fit_rows, _) in enumerate(splits):
        seen = observed[fit_rows].any(axis=0)  # [M]
        for j in np.flatnonzero(~seen):
            count = int(observed[:, j].sum())
            raise MlmmError(
                f"modality {data.modality_names[j]!r} is present in only {count} training "
                f"sample(s), and fold {fold + 1} of {len(splits)} of {what} trains without any "
                f"of them; drop that modality"
                + (", or use fewer folds" if count > 1 and len(splits) > 2 else "")
            )


def check_auto_precision(precision: str | int) -> None:
    """Refuse a mixed precision for ``method="auto"`` in one line: the ensemble trains and
    predicts in float32, since its reference members fit outside the shared loop and a mixed
    precision would apply to some members only."""
    if check_precision(precision) != "32":
        raise MlmmError(
            f"method 'auto' trains in float32, got precision {precision!r}; use precision '32', "
            f"or train a single method with a mixed precision"
        )


def fit_auto(
    train: MultimodalDataset,
    *,
    budget: str = "medium",
    folds: int | None = None,
    max_epochs: int | None = None,
    rounds: int | None = None,
    bags: int | None = None,
    portfolio: Sequence[str | Mapping[str, Any]] | None = None,
    time_limit: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    callback: Callable[[dict[str, Any]], None] | None = None,
    info: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Choose, weight and refit the best ensemble for ``train`` (see the module docstring).

    Parameters
    ----------
    train : MultimodalDataset
        The training data, with its missingness (``observed``). Nothing else is looked at.
    budget : {"fast", "medium", "best"}, default "medium"
        Sets the folds, epochs, rounds and portfolio (:data:`BUDGETS`).
    folds, max_epochs, rounds : int, optional
        Override the budget's inner-CV folds (>= 2), deep members' epoch cap and ensemble
        selection rounds.
    bags : int, optional
        Override the budget's ensemble-selection bags (:func:`bagged_ensemble_selection`;
        1: one selection over every candidate). With more than one bag and at least
        :data:`ANCHOR_MIN_ROWS` training rows (classification), every bag holds a dominant
        member if there is one (:func:`dominant_member`); the model's
        ``trainer_config["auto"]["anchored_on"]`` names it (None: not anchored).
    portfolio : sequence of str or dict, optional
        The candidate members instead of :func:`default_portfolio`: method names, or dicts
        with ``method`` and optional ``params``, ``weight_decay`` (default for methods outside
        the reference family: :func:`scaled_weight_decay`) and ``name``.
    time_limit : float, optional
        Seconds for the cross-validation. Once spent, members whose folds are not all done
        are left out (with a note), except that the first member always completes; the refit
        always completes.
    seed : int, default 0
        Seeds the folds and every training: same seed, same ensemble.
    batch_size, lr, device :
        Passed to every :class:`~mlmm.Trainer`.
    cache_dir : str or Path, optional
        Directory for finished fold results and refitted members; a rerun after an
        interruption (even ``kill -9``) reuses them.
    progress : bool, default True
        Show a Rich progress bar over (member, fold) fits and refits.
    callback : callable, optional
        Called with ``{"stage": "cv" or "refit", "model", "fold", "cached"}`` after each
        (member, fold) result and each refit is stored.
    info : mapping, optional
        Stored with the model (dataset name, missingness...).

    Returns
    -------
    TrainedModel
        An ``auto-ensemble`` model; ``trained.model.leaderboard_frame()`` (or
        :func:`leaderboard`) lists every candidate with its inner-CV score and weight.

    Examples
    --------
    >>> import mlmm
    >>> from mlmm.tune.auto import fit_auto, leaderboard
    >>> ds = mlmm.load_dataset("synthetic", n_samples=300)
    >>> trained = fit_auto(ds, budget="fast", folds=2, max_epochs=3,
    ...                    portfolio=["per-modality-logistic", "hemis"], progress=False)
    >>> trained.method, round(float(leaderboard(trained)["weight"][1:].sum()), 6)  # members
    ('auto-ensemble', 1.0)
    """
    settings = dict(_budget(budget))
    if getattr(train, "n_samples", 0) >= LARGE_DATA:
        settings["folds"] = min(settings["folds"], 3)
    overrides = (("folds", folds), ("max_epochs", max_epochs), ("rounds", rounds), ("bags", bags))
    for name, value in overrides:
        if value is not None:
            check_range(name, value, 2 if name == "folds" else 1, integer=True)
            settings[name] = value
    if time_limit is not None:
        check_range("time_limit", time_limit, 0, low_inclusive=False)
    check_range("seed", seed, 0, integer=True)
    if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
        raise MlmmError(
            f"cache_dir must be a folder path (str or Path), got {cache_dir!r}; pass a path"
        )
    if not isinstance(train, MultimodalDataset):
        raise MlmmError(f"fit_auto needs a MultimodalDataset, got {type(train).__name__}")
    if train.task.is_multilabel:  # its ensemble mixes single-label probabilities
        raise MlmmError(
            "auto (fit_auto) supports classification and regression, not multilabel; train a "
            "method listed by `mlmm methods --task multilabel` instead"
        )
    train = _nonempty(train)
    # before any member trains: a modality absent from every row is one error, not one per
    # member (each would be skipped with it, then "no portfolio member could be trained")
    check_every_modality_seen(train)
    if train.n_samples < 2 * settings["folds"]:
        raise MlmmError(
            f"{settings['folds']}-fold inner cross-validation needs at least "
            f"{2 * settings['folds']} training samples, got {train.n_samples}; pass fewer "
            f"folds or more data"
        )
    if portfolio is None:
        candidates, skipped = default_portfolio(train, budget)
    else:
        if isinstance(portfolio, (str, Mapping)):  # iterating it would give letters or keys
            raise MlmmError(
                f"portfolio must be a list of method names or dicts, got {portfolio!r}; "
                f"write a list, e.g. [{portfolio!r}]"
            )
        candidates, skipped = [_as_member(m, train.n_samples) for m in portfolio], []
        if not candidates:
            raise MlmmError("portfolio is empty; name at least one method, e.g. ['hemis']")
    names = [member_label(m) for m in candidates]
    if len(set(names)) != len(names):
        raise MlmmError(f"portfolio members must differ (give each a 'name'), got {names}")
    trainer_args = {"batch_size": batch_size, "lr": lr, "device": device, "seed": seed}
    # what a fold's or a refit's result depends on (not the rounds, nor the other candidates)
    fit_settings = {k: settings[k] for k in ("folds", "max_epochs", "patience")}
    cache = _Cache(cache_dir, _fingerprint(train), {**fit_settings, **trainer_args})
    splits = _folds(train, settings["folds"], seed)
    check_folds_see_every_modality(train, splits, "the inner cross-validation")
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with _Progress(progress, len(candidates) * len(splits)) as bar:
        for member in candidates:
            # the time limit starts counting once one member has all its folds: never none
            finished = any(r["oof"] is not None for r in results)
            deadline = None if time_limit is None or not finished else start + time_limit
            results.append(
                _cross_validate(
                    member, train, splits, settings, trainer_args, cache, bar, callback, deadline
                )
            )
        ok = [r for r in results if r["oof"] is not None]
        if not ok:
            notes = "; ".join(f"{r['model']}: {r['note']}" for r in results)
            raise MlmmError(f"no portfolio member could be trained on these data ({notes})")
        oof = [r["oof"] for r in ok]
        classification = train.task.is_classification
        anchor = dominant_member(oof, train.targets, classification)
        if settings["bags"] == 1:  # plain selection over every candidate: no bags to anchor
            anchor = None
        weights = bagged_ensemble_selection(
            oof, train.targets, classification, settings["rounds"], settings["bags"], seed, anchor
        )
        anchored_on = None if anchor is None else ok[anchor]["model"]
        chosen = [(r, w) for r, w in zip(ok, weights, strict=True) if w > 0]
        members = [{**r["member"], "name": r["model"], "epochs": r["epochs"]} for r, _ in chosen]
        board = _leaderboard(results, ok, weights, skipped, train, anchored_on)
        bar.add_total(len(members))
        standardizer = Standardizer().fit(train)
        train_s = standardizer.transform(train)
        ensemble = AutoEnsemble(
            train.specs,
            train.task,
            members=members,
            weights=[w for _, w in chosen],
            leaderboard=board,
        )
        histories: list[TrainHistory] = []
        refit_trainer = Trainer(max_epochs=settings["max_epochs"], progress=False, **trainer_args)
        for key, member in zip(ensemble.models, members, strict=True):
            model = ensemble.models[key]
            cached = cache.load_member(member)
            if cached is None:
                member_histories = fit_member(refit_trainer, model, member, train_s, None)
                cache.save_member(member, model, member_histories)
            else:
                model.load_state_dict(cached[0])
                member_histories = cached[1]
            histories += member_histories
            bar.advance(f"refit {member['name']}")
            if callback is not None:
                event = {"stage": "refit", "model": member["name"], "cached": cached is not None}
                callback({**event, "fold": None})
    ensemble.eval()
    return TrainedModel(
        model=ensemble,
        standardizer=standardizer,
        histories=histories,
        trainer_config={
            **refit_trainer.config(),
            "auto": {"budget": budget, **settings, "anchored_on": anchored_on},
        },
        info=dict(info or {}),
        prior=_prior(train),
        train_seconds=time.perf_counter() - start,
    )


def leaderboard(trained: TrainedModel) -> pd.DataFrame:
    """The inner cross-validation leaderboard of a model from :func:`fit_auto`, best first:
    every candidate with its out-of-fold score, ensemble weight, epochs and any note."""
    if not isinstance(trained.model, AutoEnsemble):
        raise MlmmError(
            f"leaderboard needs a model trained with method='auto', got {trained.method!r}"
        )
    return trained.model.leaderboard_frame()


def ensemble_selection(
    predictions: Sequence[np.ndarray], targets: np.ndarray, classification: bool, rounds: int
) -> list[float]:
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004).

    Starting from an empty ensemble, ``rounds`` times add the candidate whose inclusion gives
    the running average of ``predictions`` (out-of-fold class probabilities ``[N, K]`` or
    values ``[N]``) the lowest log loss (classification) or mean squared error; ties go to the
    earlier candidate. Returns each candidate's count over ``rounds`` (weights summing to 1).
    """
    check_range("rounds", rounds, 1, integer=True)
    preds = [np.asarray(p, dtype=np.float64) for p in predictions]
    counts = np.zeros(len(preds), dtype=np.int64)
    total = np.zeros_like(preds[0])
    for step in range(1, rounds + 1):
        losses = [_loss((total + p) / step, targets, classification) for p in preds]
        best = int(np.argmin(losses))
        counts[best] += 1
        total = total + preds[best]
    return (counts / rounds).tolist()


def dominance(predictions: Sequence[np.ndarray], targets: np.ndarray) -> tuple[int, float]:
    """The candidate with the lowest log loss and its lead over the runner-up, in standard
    errors: the mean over rows of their per-row log-loss difference divided by its standard
    error (a paired z statistic). ``predictions`` are class probabilities ``[N, K]``, at
    least two candidates."""
    losses = np.stack([_row_log_loss(np.asarray(p), targets) for p in predictions])  # [M, N]
    best, second = np.argsort(losses.mean(axis=1), kind="stable")[:2]
    lead = losses[second] - losses[best]  # [N]
    spread = lead.std(ddof=1) / math.sqrt(len(lead)) if len(lead) > 1 else 0.0
    return int(best), float(lead.mean() / (spread + _EPS))


def dominant_member(
    predictions: Sequence[np.ndarray], targets: np.ndarray, classification: bool
) -> int | None:
    """The candidate the bagged selection anchors its bags on, or None.

    Classification only, with at least :data:`ANCHOR_MIN_ROWS` rows and two candidates: the
    candidate with the lowest log loss, if it leads the runner-up by at least
    :data:`DOMINANCE_Z` standard errors (:func:`dominance`) and its accuracy is also the
    highest of all candidates (a tie counts as highest). On fewer rows a member that is
    error-free on them by chance looks dominant and is confidently wrong elsewhere; without
    a clear lead, anchoring one member costs log loss (the fifth design round); a member
    that leads in log loss but not in accuracy cost accuracy when anchored (the seventh,
    docs/auto.md)."""
    if not classification or len(predictions) < 2 or len(targets) < ANCHOR_MIN_ROWS:
        return None
    best, z = dominance(predictions, targets)
    if z < DOMINANCE_Z:
        return None
    correct = [int((np.asarray(p).argmax(axis=1) == targets).sum()) for p in predictions]
    return best if correct[best] >= max(correct) else None


def bagged_ensemble_selection(
    predictions: Sequence[np.ndarray],
    targets: np.ndarray,
    classification: bool,
    rounds: int,
    bags: int = 20,
    seed: int = 0,
    anchor: str | int | None = "dominant",
) -> list[float]:
    """Bagged ensemble selection (Caruana et al., ICML 2004, section 4.3).

    ``bags`` times, :func:`ensemble_selection` runs on a random half of the candidates
    (seeded; at least two, so two candidates are always selected from together), and the
    weights are averaged over the bags (they still sum to 1). Selecting from all candidates
    at once overfits the out-of-fold predictions when they are few (a few hundred samples): a
    member that happened to score well there takes most of the weight. Bags spread the weight
    over several good members, as the paper recommends when the selection data are small.
    ``bags=1`` (or one candidate) is plain :func:`ensemble_selection` over every candidate.

    Parameters
    ----------
    anchor : {"dominant"} or int or None, default "dominant"
        A candidate every bag holds (with ``size - 1`` others drawn at random), so that bagging
        does not dilute a member that clearly beats the rest. ``"dominant"``: the one
        :func:`dominant_member` finds, if any (classification with at least
        :data:`ANCHOR_MIN_ROWS` rows); an int: that candidate's index; None: never anchored.
        Unanchored, the bags are those drawn before anchoring existed (same weights).
    """
    check_range("bags", bags, 1, integer=True)
    index = isinstance(anchor, int | np.integer) and not isinstance(anchor, bool)
    if not (anchor is None or anchor == "dominant" or (index and 0 <= anchor < len(predictions))):
        raise MlmmError(
            f"anchor must be 'dominant', None or a candidate index in [0, {len(predictions)}), "
            f"got {anchor!r}"
        )
    if bags == 1 or len(predictions) == 1:
        return ensemble_selection(predictions, targets, classification, rounds)
    if anchor == "dominant":
        anchor = dominant_member(predictions, targets, classification)
    rng = np.random.default_rng(derive_seed(seed, "auto-bags"))
    # at least two: a bag of one candidate gives it all its weight whatever its loss
    size = max(2, round(len(predictions) / 2))
    others = np.array([i for i in range(len(predictions)) if i != anchor])
    total = np.zeros(len(predictions))
    for _ in range(bags):
        if anchor is None:
            pick = np.sort(rng.choice(len(predictions), size=size, replace=False))
        else:
            drawn = rng.choice(others, size=size - 1, replace=False)
            pick = np.sort(np.append(drawn, anchor))
        chosen = ensemble_selection([predictions[i] for i in pick], targets, classification, rounds)
        total[pick] += chosen
    return (total / bags).tolist()


# ---------------------------------------------------------------------- internals
def _budget(budget: str) -> dict[str, Any]:
    if not isinstance(budget, str) or budget not in BUDGETS:
        raise MlmmError(f"budget must be one of {list(BUDGETS)}, got {budget!r}")
    return BUDGETS[budget]


def _as_member(member: str | Mapping[str, Any], n_samples: int) -> dict[str, Any]:
    if isinstance(member, str):
        member = {"method": member}
    if not isinstance(member, Mapping) or "method" not in member:
        raise MlmmError(
            f"a portfolio entry is a method name or a dict with 'method', got {member!r}"
        )
    if member["method"] not in METHODS or member["method"] == "auto-ensemble":
        from mlmm.errors import unknown_name_error

        choices = [m for m in METHODS.names() if m != "auto-ensemble"]
        raise unknown_name_error("portfolio method", str(member["method"]), choices)
    allowed = ("name", "method", "params", "weight_decay")
    unknown = sorted(set(member) - set(allowed))
    if unknown:
        raise MlmmError(
            f"portfolio entry {dict(member)!r} has unknown keys {unknown}; use {allowed}"
        )
    out = {k: v for k, v in member.items() if k != "params"}
    params = dict(member.get("params") or {})
    try:  # JSON-native values: the ensemble saves its members' params as JSON
        out["params"] = json.loads(json.dumps(params, default=_plain_number))
    except (TypeError, ValueError) as exc:
        raise MlmmError(
            f"portfolio entry {out['method']!r} has params that cannot be saved ({exc}); "
            "give numbers, strings, booleans and lists of them"
        ) from None
    accepted = method_hyperparameters(out["method"])
    for key in out["params"]:
        if key not in accepted:
            raise MlmmError(
                f"portfolio method {out['method']!r} has no hyperparameter {key!r}; "
                f"it takes {sorted(accepted)}"
            )
    if out.get("weight_decay") is None and METHODS.get(out["method"]).info["family"] != "reference":
        out["weight_decay"] = scaled_weight_decay(n_samples)
    return out


def _plain_number(value: Any) -> Any:
    """A NumPy array or scalar as the list or number it holds (``json.dumps``'s ``default``)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _note(member: Mapping[str, Any], note: str) -> dict[str, Any]:
    return {"model": member_label(member), "method": member["method"], "note": note}


def _row_log_loss(pred: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's log loss ``[N]`` of class probabilities ``[N, K]``."""
    return -np.log(np.clip(pred[np.arange(len(targets)), targets], _EPS, 1.0))


def _loss(pred: np.ndarray, targets: np.ndarray, classification: bool) -> float:
    if classification:
        return float(_row_log_loss(pred, targets).mean())
    return float(np.mean((pred - targets) ** 2))


def _folds(data: MultimodalDataset, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified (classification) or plain k-fold splits of the training rows, seeded; by
    whole groups when ``data.groups`` is set (no group on both sides of a fold). A class with
    fewer than ``k`` samples is spread over as many folds as it has samples; plain k-fold
    only when every class has fewer than ``k``."""
    from sklearn.model_selection import KFold, StratifiedKFold

    random_state = int(derive_seed(seed, "auto-folds").generate_state(1)[0])
    if data.groups is not None:
        from mlmm.data.split import group_folds

        y = data.targets if data.task.is_classification else None
        return group_folds(data.groups, k, random_state, y)
    if data.task.is_classification:
        counts = np.bincount(data.targets, minlength=data.task.n_classes)
        # a class rarer than k spreads over as many folds as it has samples (so, with two or
        # more, every fold trains on some of it); plain k-fold only when no class fills k folds
        if counts.max() >= k:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=random_state)
            with warnings.catch_warnings():  # "the least populated class has only n members"
                warnings.filterwarnings("ignore", "The least populated class", UserWarning)
                return list(splitter.split(np.zeros(data.n_samples), data.targets))
    splitter = KFold(n_splits=k, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(data.n_samples)))


def _fingerprint(data: MultimodalDataset) -> str:
    """A hash of everything training reads: specs, task, inputs, presence and targets (the
    training checkpoints' :func:`~mlmm.train.resume.dataset_fingerprint`)."""
    from mlmm.train.resume import dataset_fingerprint

    return dataset_fingerprint(data)


def _best_epoch(histories: list[TrainHistory]) -> int | None:
    """The epoch at which the whole model's validation loss was lowest (for a method trained in
    stages, the latest such epoch of any stage); None for members that do not train by epochs.

    For a method with selection parts (``late-fusion``'s per-head selection) this is the epoch
    of the best *assembled* model, not of any one part: the refit trains every part for the
    same number of epochs, so the count that suits them together is the one to keep.
    """
    best = [h.best_epoch for h in histories if h.epochs]
    return max(best) if best else None


def _cross_validate(
    member: dict[str, Any],
    data: MultimodalDataset,
    splits: list[tuple[np.ndarray, np.ndarray]],
    settings: dict[str, Any],
    trainer_args: dict[str, Any],
    cache: _Cache,
    bar: _Progress,
    callback: Callable[[dict[str, Any]], None] | None,
    deadline: float | None,
) -> dict[str, Any]:
    """Out-of-fold predictions, epochs and time of one member (or the note why it has none)."""
    label = member_label(member)
    row: dict[str, Any] = {"model": label, "member": member, "oof": None, "epochs": None}
    row.update(seconds=0.0, note="")
    oof = None
    epochs = []
    for fold, (fit_rows, held_rows) in enumerate(splits):
        result = cache.load_fold(member, fold, held_rows)
        cached = result is not None
        if result is None:
            if deadline is not None and time.perf_counter() >= deadline:
                bar.advance(f"{label} skipped", len(splits) - fold)
                row["note"] = "time limit reached before its cross-validation finished"
                return row
            result = _fit_fold(member, data, fit_rows, held_rows, settings, trainer_args)
            cache.save_fold(member, fold, result, held_rows)
        bar.advance(f"{label} fold {fold + 1}/{len(splits)}")
        if callback is not None:
            callback({"stage": "cv", "model": label, "fold": fold, "cached": cached})
        if "note" in result:
            bar.advance(f"{label} skipped", len(splits) - fold - 1)
            row["note"] = result["note"]
            return row
        pred = np.asarray(result["oof"], dtype=np.float64)
        if not np.isfinite(pred).all():  # the selection would take a NaN loss for the lowest
            bar.advance(f"{label} skipped", len(splits) - fold - 1)
            row["note"] = "skipped: its out-of-fold predictions are not all finite"
            return row
        if oof is None:
            oof = np.zeros((data.n_samples, *pred.shape[1:]))
        oof[held_rows] = pred
        row["seconds"] += result["seconds"]
        if result["best_epoch"] is not None:
            epochs.append(result["best_epoch"])
    row["oof"] = oof
    row["epochs"] = int(round(float(np.median(epochs)))) if epochs else None
    return row


def _fit_fold(
    member: dict[str, Any],
    data: MultimodalDataset,
    fit_rows: np.ndarray,
    held_rows: np.ndarray,
    settings: dict[str, Any],
    trainer_args: dict[str, Any],
) -> dict[str, Any]:
    """Train ``member`` on ``fit_rows`` (early-stopped on ``held_rows``) and predict those."""
    trainer = Trainer(
        max_epochs=settings["max_epochs"],
        patience=settings["patience"],
        progress=False,
        **trainer_args,
        **(
            {"weight_decay": member["weight_decay"]}
            if member.get("weight_decay") is not None  # 0 is a value, as in fit_member
            else {}
        ),
    )
    held = data.subset(held_rows)
    start = time.perf_counter()
    try:
        model = create_method(member["method"], data.specs, data.task, **member["params"])
        trained = trainer.fit(model, data.subset(fit_rows), held)
    except MlmmError as err:  # the member cannot run on these data: skipped, with the reason
        return {"note": f"skipped: {err}"}
    return {
        "oof": trained.predict_raw(held, on_empty="prior").tolist(),
        "best_epoch": _best_epoch(trained.histories),
        "seconds": time.perf_counter() - start,
    }


def _leaderboard(
    results: list[dict[str, Any]],
    ok: list[dict[str, Any]],
    weights: list[float],
    skipped: list[dict[str, Any]],
    data: MultimodalDataset,
    anchored_on: str | None = None,
) -> list[dict[str, Any]]:
    """One row per candidate (the ensemble first), JSON-ready, best inner-CV score first; the
    ensemble's note names the member its bags were anchored on, if any."""
    classification = data.task.is_classification
    score_name = "cv_log_loss" if classification else "cv_mse"
    weight_of = {r["model"]: w for r, w in zip(ok, weights, strict=True)}

    def scores(pred: np.ndarray | None) -> dict[str, float | None]:
        if pred is None:
            out: dict[str, float | None] = {score_name: None}
            if classification:
                out["cv_accuracy"] = None
            return out
        out = {score_name: _loss(pred, data.targets, classification)}
        if classification:
            # as the evaluation: undefined (None here, JSON) when a score is not finite, so
            # a NaN row is never read as class 0
            from mlmm.eval.metrics import accuracy

            value = accuracy(pred, data.targets)
            out["cv_accuracy"] = value if np.isfinite(value) else None
        return out

    rows = []
    for r in results:
        member = r["member"]
        rows.append(
            {
                "model": r["model"],
                "method": member["method"],
                **scores(r["oof"]),
                "weight": weight_of.get(r["model"], 0.0),
                "epochs": r["epochs"],
                "weight_decay": member.get("weight_decay"),
                "cv_seconds": round(r["seconds"], 3),
                "note": r["note"],
            }
        )
    rows.sort(key=lambda row: (row[score_name] is None, row[score_name] or 0.0))
    mixture = sum(w * r["oof"] for r, w in zip(ok, weights, strict=True))
    ensemble = {
        "model": "ensemble",
        "method": "auto-ensemble",
        **scores(mixture),
        "weight": 1.0,
        "epochs": None,
        "weight_decay": None,
        "cv_seconds": round(sum(r["seconds"] for r in results), 3),
        "note": "weights chosen on these out-of-fold predictions (optimistic)"
        + (
            ""
            if anchored_on is None
            else f"; every bag anchored on the dominant member {anchored_on}"
        ),
    }
    empty = {k: None for k in rows[0]} if rows else {}
    extra = [{**empty, **s, "weight": 0.0, "cv_seconds": 0.0} for s in skipped]
    return [ensemble, *rows, *extra]


def _rows_digest(rows: np.ndarray) -> str:
    """A short hash of row indices (a fold's held-out rows, stored with its cached result)."""
    return hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


class _Cache:
    """Finished fold results (JSON) and refitted members (artifacts) under ``cache_dir``,
    keyed by a hash of the data fingerprint, the member and the settings."""

    def __init__(self, root: str | Path | None, fingerprint: str, settings: dict[str, Any]):
        self.root = None if root is None else Path(root)
        self.base = {"data": fingerprint, "settings": settings, "mlmm": mlmm.__version__}

    def _key(self, **parts: Any) -> str:
        text = json.dumps({**self.base, **parts}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load_fold(
        self, member: dict[str, Any], fold: int, held_rows: np.ndarray
    ) -> dict[str, Any] | None:
        """The cached result of ``fold``, or None: not cached, unreadable, or for other
        held-out rows (the key does not hold the folds, so a result from other folds, e.g.
        before rare classes were stratified, would put its predictions on the wrong rows;
        a result saved without the rows' digest is checked by its length only)."""
        if self.root is None:
            return None
        path = self.root / "folds" / f"{self._key(member=member, fold=fold)}.json"
        if not path.exists():
            return None
        try:
            result = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None  # unreadable: recompute it (writes are atomic, so this is rare)
        held = _rows_digest(held_rows)
        if result.get("held", held) != held or len(result.get("oof", held_rows)) != len(held_rows):
            return None
        return result

    def save_fold(
        self, member: dict[str, Any], fold: int, result: dict[str, Any], held_rows: np.ndarray
    ) -> None:
        if self.root is None:
            return
        path = self.root / "folds" / f"{self._key(member=member, fold=fold)}.json"
        with atomic_write(path) as fh:
            json.dump({**result, "held": _rows_digest(held_rows)}, fh)

    def _member_path(self, member: dict[str, Any]) -> Path:
        return self.root / "members" / self._key(refit=member)

    def load_member(self, member: dict[str, Any]) -> tuple[dict, list[TrainHistory]] | None:
        if self.root is None or not self._member_path(member).is_dir():
            return None
        try:
            config, state = load_artifact(self._member_path(member))
        except MlmmError:
            return None  # incomplete or corrupt: refit it
        return state, [TrainHistory(**h) for h in config["histories"]]

    def save_member(self, member: dict[str, Any], model, histories: list[TrainHistory]) -> None:
        if self.root is not None:
            config = {"member": member, "histories": [h.to_dict() for h in histories]}
            save_artifact(self._member_path(member), model.state_dict(), config)


class _Progress:
    """A Rich progress bar over (member, fold) fits and refits, or nothing when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bar = Progress(
                TextColumn("auto"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("cross-validation", total=self.total)
        return self

    def advance(self, description: str, steps: int = 1) -> None:
        if self.enabled:
            self._bar.update(self._task, advance=steps, description=description)

    def add_total(self, steps: int) -> None:
        if self.enabled:
            self.total += steps
            self._bar.update(self._task, total=self.total)

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)
