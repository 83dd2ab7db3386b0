"""Held-out hyperparameter studies on Optuna, scored on the training data only, stored so they
resume.

A study samples a method's :attr:`~mlmm.methods.MissingModalityModel.search_space` (and the
trainer's :data:`~mlmm.tune.space.TRAINER_SPACE` for methods that train by gradient) with a
seeded TPE sampler. Each trial trains on part of the *training* data and is scored on the rest
(k folds inside it for small data, one held-out fifth otherwise): the test split is never
seen. Trials of methods trained in one stage by the shared loop are pruned (median rule) on
the first fold's per-epoch validation loss.

Every finished trial — complete, pruned or failed — is written whole to the results store, so
a study killed at any point (``kill -9`` included) resumes from its finished trials: they are
replayed into the study and never rerun. The sampler is re-seeded from ``(seed, trial
number)`` before each trial, so a resumed study asks for exactly the trials an uninterrupted
one would have.

Several processes may run one stored study at once: each trial is claimed in the store before
it starts (as benchmark runs are: owner, heartbeat, a dead owner's claim taken over), so it
runs once, and the budget counts everyone's trials. A process starts trial ``n`` only once
trials ``0..n-1`` are finished, except the random startup trials: the study is then trial for
trial the one a single process runs (the startup trials run in parallel, later ones in turn).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlmm.data.dataset import MultimodalDataset
from mlmm.errors import MlmmError
from mlmm.methods.base import check_range
from mlmm.methods.registry import METHODS, create_method, method_hyperparameters
from mlmm.train.trainer import Trainer, check_trainer_params
from mlmm.tune.auto import check_every_modality_seen, check_folds_see_every_modality
from mlmm.tune.space import (
    TRAINER_PREFIX,
    TRAINER_SPACE,
    Dimension,
    check_space,
    corner,
    describe,
    distributions,
    method_parameters,
    suggest,
)
from mlmm.utils import derive_seed, rng_for

#: Below this many training samples a study scores each trial by k-fold cross-validation
#: inside the training data (early stopping on a single 20% split of a few hundred samples is
#: noise); from it on, on one held-out fifth of it.
SMALL_DATA = 1000
#: Folds used for small data when ``folds`` is not given.
SMALL_DATA_FOLDS = 3
#: Share of the training data held out for validation when ``folds == 1``.
HOLDOUT = 0.2
#: Random trials before the TPE sampler models the history (independent of the budget, so a
#: study extended to more trials asks for the same first trials).
STARTUP_TRIALS = 5
#: Median pruning: completed trials needed before any trial is pruned, and epochs every trial
#: runs before it can be.
PRUNE_STARTUP_TRIALS = 5
PRUNE_WARMUP_EPOCHS = 5
#: Seconds between two looks at the store while every trial left waits on trials another
#: process on the same study is running.
WAIT_SECONDS = 0.5


@dataclass
class TuneSettings:
    """A study's budget: trials (and optionally seconds), folds and the tuning seed.

    Parameters
    ----------
    trials : int, default 20
        Trials in the study (finished ones count: complete, pruned and failed). A resumed
        study runs only the trials it lacks.
    timeout : float or None
        Seconds: no new trial starts once they are spent (the running one finishes).
    folds : int or None
        Folds of the training data each trial is scored on; None: 3 below 1000 training
        samples, else 1 (one held-out fifth).
    seed : int, default 0
        Seeds the sampler, the folds and every trial's training.
    """

    trials: int = 20
    timeout: float | None = None
    folds: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or self.trials < 1:
            raise MlmmError(
                f"a tuning budget needs at least one trial, got trials={self.trials!r}; "
                f"give a positive number (e.g. 20)"
            )
        if self.timeout is not None:
            check_range("timeout", self.timeout, 0, low_inclusive=False)
        if self.folds is not None:
            check_range("folds", self.folds, 1, integer=True)
        check_range("seed", self.seed, 0, integer=True)


@dataclass
class TuneResult:
    """The outcome of a study.

    Attributes
    ----------
    method : str
    params : dict
        The best trial's method hyperparameters (fixed ones included): pass them to
        ``create_method`` or ``--param``.
    trainer : dict
        The best trial's trainer parameters (``lr``, ``weight_decay``, ``batch_size``):
        keyword arguments for :class:`mlmm.Trainer`. Empty for the reference family.
    value : float
        The best trial's validation loss (mean over folds): cross-entropy for
        classification, mean squared error for regression.
    metric : str
        ``"log_loss"`` or ``"mse"``.
    best_trial : int
        The best trial's number.
    trials : pandas.DataFrame
        One row per finished trial: number, state, value, seconds, error, then each parameter.
    settings : TuneSettings
        The budget the study ran under (``folds`` resolved).
    study_key : str
        The study's key in the results store (a hash of its configuration and training data).
    n_train : int
        Training samples the study split into folds.
    """

    method: str
    params: dict[str, Any]
    trainer: dict[str, Any]
    value: float
    metric: str
    best_trial: int
    trials: pd.DataFrame
    settings: TuneSettings
    study_key: str
    n_train: int
    records: list[dict[str, Any]] = field(default_factory=list, repr=False)
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: what a run records about its hyperparameters."""
        states = self.trials["state"].value_counts().to_dict() if len(self.trials) else {}
        return {
            "hyperparameters": "tuned",
            "method": self.method,
            "budget": {
                "trials": self.settings.trials,
                "timeout": self.settings.timeout,
                "folds": self.settings.folds,
                "seed": self.settings.seed,
            },
            "best_trial": self.best_trial,
            "value": self.value,
            "metric": self.metric,
            "params": self.params,
            "trainer": self.trainer,
            "n_train": self.n_train,
            "trials": {state: int(states.get(state, 0)) for state in _STATES},
            "study_key": self.study_key,
        }

    def stored(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`~mlmm.bench.ResultsStore.save_study`: a study tuned in a
        benchmark worker, written whole by the coordinator."""
        return {
            "study_key": self.study_key,
            "config": self.config,
            "dataset": self.config.get("context", {}).get("dataset", ""),
            "method": self.method,
            "trials": self.records,
        }

    def save(self, path: str | Path) -> Path:
        """Write the best point as YAML (atomically): ``method``, ``params``, ``trainer`` and
        the study's summary; ``mlmm train --params FILE`` reads it."""
        import yaml

        from mlmm.utils import atomic_write

        path = Path(path)
        data = {"method": self.method, "params": self.params, "trainer": self.trainer}
        data["study"] = {k: v for k, v in self.summary().items() if k not in data}
        context = self.config.get("context", {})
        # the split the study saw: read_params refuses training on another one
        data["study"]["data"] = {k: context[k] for k in _SPLIT_KEYS if k in context}
        with atomic_write(path) as fh:
            fh.write(
                f"# mlmm tune: best of {len(self.trials)} trials, validation {self.metric} "
                f"{self.value:.4f} on {self.settings.folds} fold(s) of the training split\n"
            )
            yaml.safe_dump(data, fh, sort_keys=False)
        return path


_STATES = ("complete", "pruned", "failed")
#: What identifies the split a study tuned on (its context), checked by :func:`read_params`.
_SPLIT_KEYS = ("dataset", "dataset_params", "split")


# ---------------------------------------------------------------------- the API
def tune(
    dataset: str | MultimodalDataset,
    method: str,
    *,
    missing: str = "none",
    n_trials: int = 20,
    timeout: float | None = None,
    seed: int = 0,
    folds: int | None = None,
    store: str | Path | None = None,
    dataset_params: dict[str, Any] | None = None,
    method_params: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    space: Mapping[str, Dimension] | None = None,
    trainer_space: Mapping[str, Dimension] | None = None,
    test_size: float = 0.2,
    val_size: float = 0.1,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Tune ``method``'s hyperparameters on the training split of ``dataset``.

    The dataset is split exactly as :func:`mlmm.run_experiment` splits it with the same
    ``seed``, ``test_size`` and ``val_size``, and the training missingness is drawn the same
    way; the study sees only the training part. Train with the result on the same seed and
    its test part was never used to choose anything.

    Parameters
    ----------
    dataset : str or MultimodalDataset
        A registered name or a dataset.
    method : str
        A registered method.
    missing : str
        Training missingness (the training side of ``TRAIN=>TEST``).
    n_trials : int, default 20
        The budget in trials (at least 1). A study already in ``store`` runs only the trials
        it lacks: rerun with a larger budget to extend it.
    timeout : float, optional
        A budget in seconds as well: no new trial starts once they are spent.
    seed : int, default 0
        Seeds the split, the masks, the sampler, the folds and every trial's training.
    folds : int, optional
        Folds of the training split per trial (default: 3 below 1000 training samples, else
        one held-out fifth).
    store : str or Path, optional
        A results store (SQLite); the study is saved there trial by trial and resumes after
        an interruption. None: in memory only.
    method_params : dict, optional
        Hyperparameters held fixed (removed from the space).
    trainer : dict, optional
        :class:`mlmm.Trainer` arguments for every trial (``max_epochs``, ``patience``...).
    space, trainer_space : dict, optional
        Replace the method's ``search_space`` or the shared :data:`TRAINER_SPACE`.
    on_trial : callable, optional
        Called with each finished trial's record (number, state, value, params, error).

    Returns
    -------
    TuneResult

    Examples
    --------
    >>> import mlmm
    >>> res = mlmm.tune("synthetic", "hemis", dataset_params={"n_samples": 300},
    ...                 n_trials=2, trainer={"max_epochs": 2})  # doctest: +SKIP
    >>> sorted(res.params)  # doctest: +SKIP
    ['depth', 'dropout', 'embed_dim', 'hidden', 'modality_dropout']
    """
    settings = TuneSettings(n_trials, timeout, folds, seed)
    name, train = training_part(dataset, dataset_params, missing, seed, test_size, val_size)
    context = {
        "dataset": name,
        "dataset_params": dataset_params or {},
        "missing": missing,
        "split": {"seed": seed, "test_size": test_size, "val_size": val_size},
    }
    return tune_training_data(
        train,
        method,
        settings,
        method_params=method_params,
        trainer=trainer,
        space=space,
        trainer_space=trainer_space,
        store=store,
        context=context,
        on_trial=on_trial,
    )


def training_part(
    dataset: str | MultimodalDataset,
    dataset_params: dict[str, Any] | None,
    missing: str,
    seed: int,
    test_size: float,
    val_size: float,
    split: str = "random",
) -> tuple[str, MultimodalDataset]:
    """The training part of :func:`mlmm.run_experiment`'s split for ``seed`` (``split``:
    ``"random"`` or ``"official"``), with its training missingness: the only data a study may
    see. Returns ``(dataset name, part)``."""
    from mlmm.data.missingness import parse_condition, simulate
    from mlmm.experiment import make_split, resolve_dataset

    name, data = resolve_dataset(dataset, dataset_params)
    condition = parse_condition(missing)
    split, _ = make_split(data, split, seed, test_size, val_size)
    train, _ = simulate(split.train, condition.train, rng_for(seed, "train-mask"))
    return name, train


def tune_run(run: Any) -> TuneResult:
    """Tune a benchmark run (a :class:`~mlmm.bench.spec.RunConfig` with a ``tune`` block) on
    its own training split, with its budget (epochs, patience) for every trial. Hyperparameters
    (and the budget's ``lr``, ``batch_size``) that the spec moved off their defaults are held
    fixed. In memory: the coordinator stores the study with the run."""
    from mlmm.bench.spec import Budget

    name, train = training_part(
        run.dataset,
        run.dataset_params,
        run.train_missing,
        run.seed,
        run.test_size,
        run.val_size,
        run.split,
    )
    defaults = method_hyperparameters(run.method)
    fixed = {k: v for k, v in run.method_params.items() if defaults.get(k, object()) != v}
    context = {
        "dataset": name,
        "dataset_params": run.dataset_params,
        "missing": run.train_missing,
        "split": {"seed": run.seed, "test_size": run.test_size, "val_size": run.val_size}
        if run.split == "random"
        else {"seed": run.seed, "official": True},
    }
    # the budget's lr and batch size are tuned unless the spec moved them off their defaults
    budget_defaults = Budget().trainer_kwargs()
    trainer = {
        k: v
        for k, v in run.budget.items()
        if k not in TRAINER_SPACE or budget_defaults.get(k, object()) != v
    }
    return tune_training_data(
        train,
        run.method,
        TuneSettings(**run.tune),
        method_params=fixed,
        trainer=trainer,
        context=context,
    )


def tune_training_data(
    train: MultimodalDataset,
    method: str,
    settings: TuneSettings,
    *,
    method_params: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    space: Mapping[str, Dimension] | None = None,
    trainer_space: Mapping[str, Dimension] | None = None,
    store: str | Path | None = None,
    context: dict[str, Any] | None = None,
    run_key: str | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Run (or resume) a study on ``train``, which is all the data it sees.

    :func:`tune` calls this on a dataset's training split; a benchmark run with a ``tune:``
    block calls it on its own training split. See :func:`tune` for the parameters;
    ``context`` (where ``train`` came from) and ``run_key`` are stored with the study.
    """
    optuna = _optuna()
    if method == "auto":  # not a registered method: fit_auto's own inner CV chooses for it
        raise MlmmError(
            "method 'auto' is not tuned: it chooses its members by its own inner "
            "cross-validation; train it (mlmm train --method auto, --param budget=...) or tune "
            "one registered method"
        )
    cls = METHODS.get(method).obj
    fixed = dict(method_params or {})
    parameters = method_parameters(cls)
    for key in fixed:
        if key not in parameters:
            raise MlmmError(
                f"method {method!r} has no hyperparameter {key!r}; accepted: {', '.join(parameters)}"
            )
    check_trainer_params(trainer)  # else every trial fails on it, said only at the end
    if (trainer or {}).get("checkpoint_dir") is not None:  # every trial's every fold in one
        raise MlmmError(
            f"a study trains a model per trial and fold, which cannot share one checkpoint "
            f"folder, got checkpoint_dir={str(trainer['checkpoint_dir'])!r} in the trainer "
            f"options; drop it (a study resumes from its store, trial by trial)"
        )
    Trainer(**{**(trainer or {}), "progress": False})  # its values too (max_epochs=0...)
    method_space = dict(cls.search_space if space is None else space)
    check_space(method, method_space, parameters, method_hyperparameters(method), fixed)
    method_space = {k: v for k, v in method_space.items() if k not in fixed}
    if trainer_space is None:  # the reference family is fitted by scikit-learn: no trainer
        trainer_space = {} if cls.family == "reference" else TRAINER_SPACE
    if cls.family == "reference" and trainer_space:
        raise MlmmError(
            f"method {method!r} is fitted by scikit-learn, with no trainer: a trainer space "
            f"({', '.join(TRAINER_PREFIX + k for k in trainer_space)}) would change nothing; "
            f"search only its own hyperparameters ({', '.join(parameters)})"
        )
    trainer_defaults = {
        k: p.default for k, p in inspect.signature(Trainer.__init__).parameters.items()
    }
    check_space("trainer", trainer_space, list(_trainer_parameters()), trainer_defaults)
    trainer_space = {k: v for k, v in trainer_space.items() if k not in (trainer or {})}
    if not method_space and not trainer_space:
        raise MlmmError(
            f"method {method!r} has nothing to tune: its search space is empty; give a space "
            f"(space={{'name': Float(low, high)}}) or declare search_space on the method"
        )
    _check_before_trials(train, method, fixed, method_space, given_space=space is not None)
    fold_indices = study_folds(train, settings.folds, settings.seed)
    check_folds_see_every_modality(train, fold_indices, "the study's validation folds")
    n_folds = len(fold_indices)
    settings = TuneSettings(settings.trials, settings.timeout, n_folds, settings.seed)
    base_trainer = {**(trainer or {}), "seed": settings.seed, "progress": False}
    config = {
        "method": method,
        "fixed": fixed,
        "space": describe(method_space),
        "trainer_space": describe(trainer_space),
        "trainer": {k: v for k, v in base_trainer.items() if k != "progress"},
        "folds": n_folds,
        "seed": settings.seed,
        "data": _fingerprint(train),
        "context": context or {},
        "protocol": 1,  # bump when the scoring changes: old studies are then not resumed
    }
    key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
    db = None
    if store is not None:
        from mlmm.bench.store import ResultsStore

        db = ResultsStore(store)
    heartbeat = None
    try:
        dataset_name = (context or {}).get("dataset", train.name)
        stored = [] if db is None else db.open_study(key, config, dataset_name, method, run_key)
        dists = {**distributions(method_space), **distributions(trainer_space, TRAINER_PREFIX)}

        def new_study(history: list[dict[str, Any]]) -> Any:
            made = optuna.create_study(
                direction="minimize",
                pruner=optuna.pruners.MedianPruner(
                    n_startup_trials=PRUNE_STARTUP_TRIALS, n_warmup_steps=PRUNE_WARMUP_EPOCHS
                ),
            )
            for record in history:  # finished trials are replayed, never rerun
                made.add_trial(_frozen_trial(optuna, record, dists))
            return made

        finished = {record["number"]: record for record in stored}
        study, replayed = new_study([]), 0  # replayed: trials 0..replayed-1 are in study
        objective = _Objective(
            train, method, fixed, method_space, trainer_space, base_trainer, fold_indices
        )
        start = time.perf_counter()
        while True:
            if db is not None:  # what other processes on this study finished or hold now
                finished.update((r["number"], r) for r in db.study_trials(key))
                claims = db.trial_claims(key)
            else:
                claims = {}
            todo = [n for n in range(settings.trials) if n not in finished]
            if not todo:
                break
            if settings.timeout is not None and time.perf_counter() - start >= settings.timeout:
                break
            number = _next_trial(todo, finished, claims)
            if number is None:  # every trial left waits on another process's trials
                time.sleep(WAIT_SECONDS)
                continue
            if db is not None:
                if heartbeat is None:  # a live owner from its first claim
                    from mlmm.bench.execute import ClaimHeartbeat
                    from mlmm.bench.store import HEARTBEAT_SECONDS

                    db.heartbeat()
                    heartbeat = ClaimHeartbeat(db.path, HEARTBEAT_SECONDS)
                    heartbeat.start()
                if not db.claim_trial(key, number):
                    continue  # another process claimed it first
            while replayed in finished:  # the finished prefix, in order
                study.add_trial(_frozen_trial(optuna, finished[replayed], dists))
                replayed += 1
            # trial n is asked from trials 0..n-1, as by one process alone; a startup trial
            # (random, whatever the history) may run before some of them finished
            asking = (
                study if replayed == number else new_study([finished[n] for n in range(replayed)])
            )
            asking.sampler = optuna.samplers.TPESampler(
                seed=_seed_int(settings.seed, "sampler", number), n_startup_trials=STARTUP_TRIALS
            )
            trial = asking.ask()
            record = {**objective(trial), "number": number}
            if record["state"] == "complete":
                asking.tell(trial, record["value"])
            elif record["state"] == "pruned":
                asking.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                asking.tell(trial, state=optuna.trial.TrialState.FAIL)
            if asking is study:
                replayed += 1
            if db is not None:
                db.add_trial(key, record)
            finished[number] = record
            if on_trial is not None:
                on_trial(record)
        records = [finished[n] for n in sorted(finished)]
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if db is not None:
            try:
                if heartbeat is not None:
                    db.release_trials(key)  # interrupted: the next process runs them
                    db.end_heartbeat()
            finally:
                db.close()
    return _result(method, fixed, records, settings, key, train, trainer_space, config)


def _next_trial(
    todo: list[int], finished: Mapping[int, dict[str, Any]], claims: Mapping[int, bool]
) -> int | None:
    """The first trial of ``todo`` that this process may run now, or None (wait): one no
    other live process holds, and either a random startup trial (its point does not depend
    on the history) or one whose every earlier trial is finished (the TPE sampler reads
    them all), so that any number of processes ask for the trials one process would. A
    trial the pruner may stop (after ``PRUNE_STARTUP_TRIALS``) reads the history too."""
    free = min(STARTUP_TRIALS, PRUNE_STARTUP_TRIALS)  # neither sampler nor pruner reads back
    for number in todo:
        if claims.get(number, False):
            continue
        if number < free or all(n in finished for n in range(number)):
            return number
    return None


def _check_before_trials(
    train: MultimodalDataset,
    method: str,
    fixed: dict[str, Any],
    method_space: Mapping[str, Dimension],
    given_space: bool = False,
) -> None:
    """One error before the study for what would fail every trial alike: a modality absent
    from every training row; fixed hyperparameters that build the method at no point (its
    defaults, or the space's low or high corner); a space given for this study that builds
    it at neither corner (a range of reals for an integer). A value wrong only beside some
    sampled ones stays a failed trial."""
    check_every_modality_seen(train)
    corners = [corner(method_space, end, fixed) for end in (0, -1)]
    for what, points, needed in (
        (f"the fixed hyperparameters {fixed}", [{}, *corners], bool(fixed)),
        (f"the search space {describe(method_space)}", corners, given_space and bool(method_space)),
    ):
        if not needed:
            continue
        errors = []
        for point in points:
            try:
                create_method(method, train.specs, train.task, **{**point, **fixed})
                break
            except MlmmError as err:
                errors.append(err)
        else:
            raise MlmmError(f"{what} cannot build {method!r}: {errors[0]}")


def read_params(
    path: str | Path, method: str, data: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(method hyperparameters, trainer parameters)`` from a file :meth:`TuneResult.save`
    wrote for ``method``; a file for another method, or not written by it, is refused.

    ``data`` (``dataset``, ``dataset_params`` and ``split``: ``seed``, ``test_size``,
    ``val_size``, as :func:`tune` records them) is the split the parameters are about to be
    trained on: a file tuned on another split is refused, since that split's training part,
    which the study scored on, holds rows of this one's test part."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MlmmError(
            f"no parameters file at {str(path)!r}; write one with mlmm tune --params-out"
        )
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MlmmError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if (
        not isinstance(content, dict)
        or not isinstance(content.get("params"), dict)
        or not isinstance(content.get("trainer"), dict)
    ):
        raise MlmmError(
            f"{path} is not a parameters file from mlmm tune --params-out (expected the keys "
            f"method, params and trainer)"
        )
    if content.get("method") != method:
        raise MlmmError(
            f"{path} holds parameters tuned for method {content.get('method')!r}, not {method!r}; "
            f"train {content.get('method')!r} or tune {method!r}"
        )
    unknown = sorted(set(content["trainer"]) - set(_trainer_parameters()))
    if unknown:
        raise MlmmError(
            f"{path}: unknown trainer parameters {unknown}; expected lr, weight_decay, batch_size"
        )
    tuned_on = (content.get("study") or {}).get("data")
    if data is not None and isinstance(tuned_on, dict):
        for key in _SPLIT_KEYS:
            if key in tuned_on and key in data and _plain(tuned_on[key]) != _plain(data[key]):
                raise MlmmError(
                    f"{path} was tuned with {key} {tuned_on[key]!r}, not {data[key]!r}: the "
                    f"study trained on rows of this test split; train with the study's "
                    f"dataset and --seed, or tune again with this one"
                )
    return dict(content["params"]), dict(content["trainer"])


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists, keys as strings), to compare."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# ---------------------------------------------------------------------- trials
class _Objective:
    """Trains and scores one trial on every fold; returns its record (never raises for a
    failing trial: the error is recorded and the study goes on)."""

    def __init__(
        self,
        train: MultimodalDataset,
        method: str,
        fixed: dict[str, Any],
        method_space: dict[str, Dimension],
        trainer_space: dict[str, Dimension],
        base_trainer: dict[str, Any],
        folds: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        self.train, self.method, self.fixed = train, method, fixed
        self.method_space, self.trainer_space = method_space, trainer_space
        self.base_trainer, self.folds = base_trainer, folds

    def __call__(self, trial: Any) -> dict[str, Any]:
        optuna = _optuna()
        start = time.perf_counter()
        intermediate: dict[int, float] = {}
        record: dict[str, Any] = {"number": trial.number, "value": None, "error": None}
        fold_losses: list[float] = []
        try:
            params = suggest(self.method_space, trial, fixed=self.fixed)
            trainer_params = suggest(self.trainer_space, trial, TRAINER_PREFIX)
            score_point(
                self.train,
                self.method,
                {**self.fixed, **params},
                {**self.base_trainer, **trainer_params},
                self.folds,
                on_epoch=_pruning_hook(trial, intermediate),
                losses=fold_losses,
            )
            value = float(np.mean(fold_losses))
            if not math.isfinite(value):
                raise MlmmError(f"the validation loss is {value}")
            record.update(state="complete", value=value)
        except optuna.TrialPruned:
            record.update(state="pruned", value=intermediate[max(intermediate)])
        except Exception as err:  # recorded with the trial; the study goes on
            record.update(state="failed", error=f"{type(err).__name__}: {err}")
        record.update(
            params=dict(trial.params),
            intermediate=intermediate,
            attrs={"fold_losses": fold_losses},
            seconds=time.perf_counter() - start,
            finished_at=time.time(),
        )
        return record


def score_point(
    train: MultimodalDataset,
    method: str,
    params: dict[str, Any],
    trainer: dict[str, Any],
    folds: list[tuple[np.ndarray, np.ndarray]],
    on_epoch: Callable[[str, dict], None] | None = None,
    losses: list[float] | None = None,
    on_fold: Callable[[Any, MultimodalDataset], None] | None = None,
) -> float:
    """The validation loss of one point (method hyperparameters and :class:`mlmm.Trainer`
    arguments), mean over ``folds`` (``(fit rows, validation rows)`` of ``train``, as
    :func:`study_folds` makes them): what a trial scores, for comparing points (say, the
    current defaults) on a study's own folds. ``on_epoch`` watches the first fold's training;
    ``losses`` collects each fold's loss as it is computed; ``on_fold`` is called with each
    fold's :class:`~mlmm.TrainedModel` and validation part (to measure more than the loss)."""
    losses = [] if losses is None else losses
    for fold, (fit_rows, val_rows) in enumerate(folds):
        fit_part, val_part = train.subset(fit_rows), train.subset(val_rows)
        model = create_method(method, train.specs, train.task, **params)
        hook = on_epoch if fold == 0 else None
        trained = Trainer(**{"progress": False, **trainer, "on_epoch": hook}).fit(
            model, fit_part, val_part
        )
        losses.append(validation_loss(trained, val_part))
        if on_fold is not None:
            on_fold(trained, val_part)
    return float(np.mean(losses))


def _pruning_hook(trial: Any, intermediate: dict[int, float]) -> Callable[[str, dict], None]:
    """``Trainer(on_epoch=...)``: report the first fold's validation loss per epoch and prune
    when the median rule says so. Only the shared loop's single stage (``main``) reports:
    stages of a staged method are not comparable epoch by epoch across trials. A validation
    loss that is NaN or infinite fails the trial at once (as a non-finite training loss does),
    whether or not pruning has started: the model is broken, not merely behind."""

    def on_epoch(stage: str, row: dict[str, float]) -> None:
        if stage != "main" or "val_loss" not in row:
            return
        step, loss = int(row["epoch"]), float(row["val_loss"])
        if not math.isfinite(loss):
            raise MlmmError(
                f"the validation loss became {loss} at epoch {step}; lower the learning rate "
                f"(trainer.lr in the space) or check the inputs"
            )
        intermediate[step] = loss
        trial.report(loss, step)
        if trial.should_prune():
            raise _optuna().TrialPruned(f"pruned at epoch {step} (validation loss {loss:.4f})")

    return on_epoch


def validation_loss(trained: Any, data: MultimodalDataset) -> float:
    """Cross-entropy (classification), binary cross-entropy averaged over labels (multilabel)
    or mean squared error (regression, target units) of a trained model on ``data``'s
    samples with at least one modality present."""
    keep = np.flatnonzero(data.observed.any(axis=1))
    if len(keep) == 0:
        raise MlmmError("a validation fold has no sample with a modality present")
    data = data.subset(keep)
    raw = trained.predict_raw(data)
    if trained.task.is_classification:
        p = raw[np.arange(len(keep)), data.targets]  # [N]
        return float(-np.mean(np.log(np.clip(p, 1e-12, None))))
    if trained.task.is_multilabel:  # raw: [N, L] label probabilities
        p = np.clip(np.where(data.targets > 0, raw, 1 - raw), 1e-12, None)
        return float(-np.mean(np.log(p)))
    return float(np.mean((raw - data.targets) ** 2))


def study_folds(
    train: MultimodalDataset, n_folds: int | None, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, validation rows)`` per fold of ``train``, stratified by class for
    classification, drawn from ``seed``: the folds a study with this seed scores on
    (``n_folds`` None: 3 below :data:`SMALL_DATA` samples, else 1). With ``train.groups``
    the folds (or the held-out share) are whole groups: k folds are stratified by class as
    far as whole groups allow (:func:`mlmm.data.split.group_folds`), the one held-out share
    is not."""
    n_folds = n_folds or (SMALL_DATA_FOLDS if train.n_samples < SMALL_DATA else 1)
    from sklearn.model_selection import KFold, StratifiedKFold, train_test_split

    rows = np.arange(train.n_samples)
    y = train.targets if train.task.is_classification else None
    state = _seed_int(seed, "tune-folds") % (2**32)
    if train.groups is not None:
        from mlmm.data.split import group_folds, group_holdout

        if n_folds == 1:
            return [group_holdout(train.groups, HOLDOUT, seed, "tune-holdout")]
        return group_folds(train.groups, n_folds, state, y)
    try:
        if n_folds == 1:
            fit, val = train_test_split(rows, test_size=HOLDOUT, random_state=state, stratify=y)
            return [(np.sort(fit), np.sort(val))]
        splitter = (StratifiedKFold if y is not None else KFold)(
            n_folds, shuffle=True, random_state=state
        )
        return [(fit, val) for fit, val in splitter.split(rows, y)]
    except ValueError as err:
        raise MlmmError(
            f"cannot split {train.n_samples} training samples into {n_folds} validation "
            f"fold(s) ({err}); use fewer folds or more data"
        ) from None


def _result(
    method: str,
    fixed: dict[str, Any],
    records: list[dict[str, Any]],
    settings: TuneSettings,
    key: str,
    train: MultimodalDataset,
    trainer_space: Mapping[str, Dimension],
    config: dict[str, Any],
) -> TuneResult:
    complete = [r for r in records if r["state"] == "complete"]
    if not complete:
        failed = [r for r in records if r["state"] == "failed"]
        first = f" (first error: {failed[0]['error']})" if failed else ""
        raise MlmmError(
            f"none of the {len(records)} trial(s) of {method!r} completed{first}; check the "
            f"search space and the data, or give a larger budget (trials, timeout)"
        )
    best = min(complete, key=lambda r: (r["value"], r["number"]))
    # in the spaces' order: a resumed study reads its trials back from the store with their
    # keys sorted, and its parameters file would otherwise differ from a fresh run's
    chosen = best["params"]
    params = {k: chosen[k] for k in config["space"] if k in chosen}
    trainer = {k: chosen[TRAINER_PREFIX + k] for k in trainer_space if TRAINER_PREFIX + k in chosen}
    rows = [
        {
            "number": r["number"],
            "state": r["state"],
            "value": r["value"],
            "seconds": r["seconds"],
            "error": r["error"],
            **r["params"],
        }
        for r in records
    ]
    return TuneResult(
        method=method,
        params={**fixed, **params},
        trainer=trainer,
        value=float(best["value"]),
        metric="mse" if train.task.is_regression else "log_loss",
        best_trial=int(best["number"]),
        trials=pd.DataFrame(rows),
        settings=settings,
        study_key=key,
        n_train=train.n_samples,
        records=records,
        config=config,
    )


def _frozen_trial(optuna: Any, record: dict[str, Any], dists: dict[str, Any]) -> Any:
    """A stored trial as an Optuna trial to add to the study (parameters outside the
    current space are dropped)."""
    states = {
        "complete": optuna.trial.TrialState.COMPLETE,
        "pruned": optuna.trial.TrialState.PRUNED,
        "failed": optuna.trial.TrialState.FAIL,
    }
    params = {k: v for k, v in record["params"].items() if k in dists}
    return optuna.trial.create_trial(
        state=states[record["state"]],
        value=record["value"] if record["state"] == "complete" else None,
        params=params,
        distributions={k: dists[k] for k in params},
        intermediate_values=dict(record["intermediate"]),
    )


def _fingerprint(data: MultimodalDataset) -> str:
    """A hash of the training data (inputs, presence, targets, groups, lengths): a study
    resumes only on the very same data."""
    from mlmm.train.resume import hash_arrays

    digest = hashlib.sha256()
    hash_arrays(digest, data)
    return digest.hexdigest()[:16]


def _seed_int(seed: int, *keys: str | int) -> int:
    return int(derive_seed(seed, *keys).generate_state(1)[0])


def _trainer_parameters() -> list[str]:
    return [name for name in method_parameters(Trainer) if name not in ("seed", "progress")]


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise MlmmError("tuning needs Optuna: pip install 'mlmm[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
