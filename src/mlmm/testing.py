"""The method contract suite: every registered method is tested for free.

Like scikit-learn's ``parametrize_with_checks`` and timm's registry-driven model tests::

    import pytest
    from mlmm.testing import method_checks

    @pytest.mark.parametrize("name, check", method_checks(), ids=...)
    def test_contract(name, check):
        check(name)

or, for one method of your own, ``check_method("my-method")`` runs every check and raises
``AssertionError`` naming the first that fails.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
import torch

from mlmm.data.batch import MultimodalBatch
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.data.split import train_val_test_split
from mlmm.eval.protocol import evaluate
from mlmm.methods.registry import METHODS, create_method, list_methods
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer

N_CLASSES = 3
N_LABELS = 4


@lru_cache(maxsize=4)
def contract_dataset(
    n_samples: int = 360, seed: int = 0, task: str = "classification"
) -> MultimodalDataset:
    """A tiny seeded dataset with two vector modalities and one sequence modality, each of
    which carries class signal on its own (so every single modality beats chance).

    ``task`` is ``"classification"`` (3 classes), ``"regression"`` or ``"multilabel"``
    (4 labels, each on in 20-50% of the samples)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples) % N_CLASSES
    means_a = rng.normal(0, 1.6, (N_CLASSES, 6))
    means_b = rng.normal(0, 1.6, (N_CLASSES, 4))
    a = means_a[y] + rng.normal(size=(n_samples, 6))
    b = means_b[y] + rng.normal(size=(n_samples, 4))
    t = np.linspace(0, 2 * np.pi, 12)
    freq = 1.0 + y[:, None]  # class sets the frequency of a sine wave
    s = np.stack([np.sin(freq * t), np.cos(freq * t)], axis=-1) + 0.5 * rng.normal(
        size=(n_samples, 12, 2)
    )
    specs = [
        ModalitySpec("a", "vector", (6,)),
        ModalitySpec("b", "vector", (4,)),
        ModalitySpec("s", "sequence", (12, 2)),
    ]
    if task == "multilabel":
        # label l is on with probability 0.2..0.5; a and b carry every label, s a sum of sines
        rates = np.linspace(0.2, 0.5, N_LABELS)
        labels = (rng.random((n_samples, N_LABELS)) < rates).astype(np.float32)  # [N, L]
        a = labels @ rng.normal(0, 1.6, (N_LABELS, 6)) + rng.normal(size=(n_samples, 6))
        b = labels @ rng.normal(0, 1.6, (N_LABELS, 4)) + rng.normal(size=(n_samples, 4))
        waves = np.sin((1.0 + np.arange(N_LABELS))[:, None] * t)  # [L, T]
        s = (labels @ waves)[..., None] + 0.5 * rng.normal(size=(n_samples, 12, 2))
        return MultimodalDataset(
            specs,
            TaskSpec("multilabel", n_labels=N_LABELS),
            {"a": a, "b": b, "s": s},
            labels,
            name="contract",
        )
    if task == "classification":
        return MultimodalDataset(
            specs,
            TaskSpec("classification", N_CLASSES),
            {"a": a, "b": b, "s": s},
            y,
            name="contract",
        )
    target = y.astype(float) + 0.1 * rng.normal(size=n_samples)
    return MultimodalDataset(
        specs, TaskSpec("regression"), {"a": a, "b": b, "s": s}, target, name="contract"
    )


def padded_sequence_dataset(garbage: bool = False) -> MultimodalDataset:
    """40 samples of a vector ``a`` (3 features) and a variable-length sequence ``s`` (up to
    8 steps of 2 channels, 1 to 8 valid; a quarter of the samples lack ``s``; row 1 is
    padded), two classes shifting both. With ``garbage`` the padded steps of present rows hold
    1e3 (written after construction, which zeroes them): for checking that padding is never
    read."""
    rng = np.random.default_rng(3)
    n = 40
    y = np.arange(n) % 2
    s = rng.normal(size=(n, 8, 2)) + y[:, None, None]
    observed = np.ones((n, 2), dtype=bool)
    observed[::4, 1] = False
    lengths = rng.integers(1, 9, size=n)
    lengths[::4] = 0
    lengths[1] = 3
    data = MultimodalDataset(
        [ModalitySpec("a", "vector", (3,)), ModalitySpec("s", "sequence", (8, 2))],
        TaskSpec("classification", 2),
        {"a": rng.normal(size=(n, 3)) + y[:, None], "s": s},
        y,
        observed=observed,
        lengths={"s": lengths},
    )
    if garbage:
        padded = np.arange(8)[None, :] >= lengths[:, None]  # [N, T]
        data.inputs["s"][padded & observed[:, 1:]] = 1e3
    return data


def _train(
    name: str,
    epochs: int = 4,
    seed: int = 0,
    dataset: MultimodalDataset | None = None,
    precision: str = "32",
) -> tuple[TrainedModel, object]:
    data = dataset or contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = create_method(name, data.specs, data.task)
    trainer = Trainer(
        max_epochs=epochs, batch_size=32, seed=seed, progress=False, precision=precision
    )
    return trainer.fit(model, split.train, split.val), split


def _presence(n: int, rows: list[list[bool]]) -> np.ndarray:
    return np.array([rows[i % len(rows)] for i in range(n)], dtype=bool)


def _forward_ok(model, batch: MultimodalBatch, what: str) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = model(batch)
    k = model.task.output_dim
    expected = (len(batch),) if model.task.is_regression else (len(batch), k)
    assert tuple(out.prediction.shape) == expected, (
        f"{what}: prediction shape {tuple(out.prediction.shape)} != {expected}"
    )
    assert torch.isfinite(out.prediction).all(), f"{what}: non-finite predictions"
    return out.prediction


# ---------------------------------------------------------------------- checks
def check_registration(name: str) -> None:
    """Registered with family, subtype, a paper, and a class docstring citing it."""
    entry = METHODS.get(name)
    cls = entry.obj
    assert cls.family and cls.subtype and cls.paper, "family, subtype and paper must be set"
    assert cls.__doc__ and "References" in cls.__doc__, "class docstring needs a References section"


def check_hyperparameters_roundtrip(name: str) -> None:
    """``get_hyperparameters`` returns the constructor's values; rebuilding from them works,
    and rebuilding from ``built_hyperparameters`` (the resolved sizes an artifact records in
    place of a rule such as None) gives the same tensors."""
    data = contract_dataset()
    model = create_method(name, data.specs, data.task)
    params = model.get_hyperparameters()
    again = create_method(name, data.specs, data.task, **params)
    assert again.get_hyperparameters() == params
    resolved = set(model.resolved_hyperparameters())
    assert resolved <= set(params), f"resolves {sorted(resolved - set(params))}, not arguments"
    built = create_method(name, data.specs, data.task, **model.built_hyperparameters())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == shapes


def check_search_space(name: str) -> None:
    """Every name of the method's ``search_space`` is a constructor argument, and the model
    builds at the space's low and high corners and at three seeded random points."""
    from mlmm.tune.space import check_space, draw, method_parameters

    cls = METHODS.get(name).obj
    space = cls.search_space
    check_space(name, space, method_parameters(cls))  # MlmmError naming the unknown parameter
    data = contract_dataset()
    points = [{key: dim.corners()[end] for key, dim in space.items()} for end in (0, -1)]
    points += [draw(space, np.random.default_rng(seed)) for seed in range(3)]
    for point in points:
        try:
            create_method(name, data.specs, data.task, **point)
        except Exception as err:
            raise AssertionError(f"the search space's point {point} does not build: {err}") from err


def check_state_dict_covers_parameters(name: str) -> None:
    """Every learnable tensor is registered, so checkpoints hold all of them."""
    data = contract_dataset()
    model = create_method(name, data.specs, data.task)
    n_params = sum(p.numel() for p in model.parameters())
    n_state = sum(
        v.numel()
        for k, v in model.state_dict().items()
        if v.is_floating_point() and "running_" not in k
    )
    assert n_params > 0, "the method has no parameters"
    assert n_state >= n_params, "state_dict() misses learnable parameters"


def check_presence_patterns(name: str) -> None:
    """All present; one modality missing everywhere; a different one missing per row; each
    single modality alone; batch size 1: right shapes, finite outputs."""
    data = contract_dataset()
    model = create_method(name, data.specs, data.task)
    m = data.n_modalities
    cases = {"all present": [[True] * m]}
    for j in range(m):
        cases[f"{data.modality_names[j]} missing everywhere"] = [[i != j for i in range(m)]]
        cases[f"only {data.modality_names[j]}"] = [[i == j for i in range(m)]]
    cases["a different modality missing per row"] = [[i != j for i in range(m)] for j in range(m)]
    for what, rows in cases.items():
        ds = data.with_presence(_presence(data.n_samples, rows))
        _forward_ok(model, MultimodalBatch.from_dataset(ds), what)
    _forward_ok(model, MultimodalBatch.from_dataset(data, [0]), "batch size 1")
    # a training step on batch size 2 with a single modality must not fail either
    model.train()
    ds = data.with_presence(_presence(data.n_samples, [[True] + [False] * (m - 1)]))
    out = model(MultimodalBatch.from_dataset(ds, [0, 1]))
    assert out.loss is not None and torch.isfinite(out.loss), "training loss on a single modality"


def _assert_absent_rows_not_read(model, data: MultimodalDataset, what: str) -> None:
    """Eval-mode predictions must not change when absent rows hold noise instead of zeros.

    Rows follow a cycle of presence patterns that includes a row with nothing present (its
    output, whatever it is, must not depend on the inputs either)."""
    model.eval()
    present = _presence(
        data.n_samples,
        [[True, False, True], [False, True, False], [True, True, False], [False, False, False]],
    )
    clean = MultimodalBatch.from_dataset(data.with_presence(present, allow_empty=True))
    noisy_inputs = {}
    for j, k in enumerate(data.modality_names):
        x = clean.inputs[k].clone()
        absent = torch.from_numpy(~present[:, j])
        x[absent] = torch.randn_like(x[absent]) * 100
        noisy_inputs[k] = x
    noisy = MultimodalBatch(noisy_inputs, clean.present, clean.modalities, clean.target)
    with torch.no_grad():
        a, b = model(clean).prediction, model(noisy).prediction
    assert torch.allclose(a, b, atol=1e-5, equal_nan=True), (
        f"{what}: outputs changed when absent rows held other values"
    )


def check_absent_rows_are_not_read(name: str) -> None:
    """Garbage in absent rows must not change any output: ``present`` is the only truth.

    Checked on a freshly created model and on one trained for an epoch on data missing
    modalities (so that state learned in ``fit`` -- stored training rows, retrieval memories,
    per-pattern models, priors -- is in use), including rows with nothing present."""
    data = contract_dataset()
    _assert_absent_rows_not_read(create_method(name, data.specs, data.task), data, "untrained")
    small = contract_dataset(n_samples=120)
    missing = _presence(
        small.n_samples, [[True, True, True], [True, False, True], [False, True, False]]
    )
    trained, _ = _train(name, epochs=1, dataset=small.with_presence(missing))
    _assert_absent_rows_not_read(trained.model, small, "trained")


def check_padding_is_not_read(name: str) -> None:
    """The padded steps of variable-length sequences change no output: a model trained an
    epoch on :func:`padded_sequence_dataset` predicts the same in evaluation mode when the
    padding of present rows holds 1e3 instead of zeros (a batch built by hand, not through a
    dataset, which would zero it)."""
    clean, noisy = padded_sequence_dataset(), padded_sequence_dataset(garbage=True)
    trained, _ = _train(name, epochs=1, dataset=clean)
    model = trained.model.eval()
    with torch.no_grad():
        a = model(MultimodalBatch.from_dataset(clean)).prediction
        b = model(MultimodalBatch.from_dataset(noisy)).prediction
    assert torch.allclose(a, b, atol=1e-5), "outputs changed when padded steps held other values"


def check_batch_independence(name: str) -> None:
    """In evaluation mode a row's prediction does not depend on the other rows of its batch
    (no statistics shared across the batch, no graph over it): the whole set at once and in
    batches of 7 give the same predictions, after an epoch of training on incomplete data."""
    data = contract_dataset(n_samples=120)
    present = _presence(
        data.n_samples, [[True, True, True], [True, False, True], [False, True, False]]
    )
    data = data.with_presence(present)
    trained, _ = _train(name, epochs=1, dataset=data)
    model = trained.model.eval()
    with torch.no_grad():
        whole = model(MultimodalBatch.from_dataset(data)).prediction
        parts = torch.cat(
            [
                model(
                    MultimodalBatch.from_dataset(data, list(range(i, min(i + 7, len(data)))))
                ).prediction
                for i in range(0, len(data), 7)
            ]
        )
    assert torch.allclose(whole, parts, atol=1e-5), "a row's prediction changed with its batch"


def check_same_seed_same_result(name: str) -> None:
    """Two trainings with the same seed give identical predictions; another seed differs
    (or, for a method declaring ``uses_seed = False``, gives the same predictions too)."""
    t1, split = _train(name, epochs=2, seed=3)
    t2, _ = _train(name, epochs=2, seed=3)
    t3, _ = _train(name, epochs=2, seed=4)
    p1, p2, p3 = (t.predict_raw(split.test) for t in (t1, t2, t3))
    np.testing.assert_array_equal(p1, p2, err_msg="same seed gave different predictions")
    if METHODS.get(name).obj.uses_seed:
        assert not np.array_equal(p1, p3), "a different seed gave exactly the same predictions"
    else:
        np.testing.assert_array_equal(
            p1, p3, err_msg="uses_seed is False, yet another seed changed the predictions"
        )


def check_save_load_roundtrip(name: str) -> None:
    """Saving and loading the artifact gives the same predictions."""
    trained, split = _train(name, epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        trained.save(f"{tmp}/model")
        loaded = TrainedModel.load(f"{tmp}/model")
    np.testing.assert_allclose(
        trained.predict_raw(split.test), loaded.predict_raw(split.test), atol=1e-6
    )
    assert loaded.model.get_hyperparameters() == trained.model.get_hyperparameters()


def check_mixed_precision(name: str) -> None:
    """Trains under ``precision="bf16-mixed"`` on the CPU: finite predictions of the right
    shape, weights kept in float32 (or float64), and either the model records ``bf16-mixed`` or (a method fitting
    outside the shared loop) it warns and records ``32`` — never a silent float32."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trained, split = _train(name, epochs=1, precision="bf16-mixed")
    outside = [w for w in caught if "trains outside the shared loop" in str(w.message)]
    if trained.precision == "32":
        assert outside, "precision bf16-mixed was asked for, fell back to 32 without a warning"
    else:
        assert trained.precision == "bf16-mixed" and not outside, trained.precision
    dtypes = {p.dtype for p in trained.model.parameters()}
    low = dtypes & {torch.bfloat16, torch.float16}
    assert not low, f"weights are stored in {low}; autocast keeps them float32"
    out = trained.predict_raw(split.test)
    assert np.isfinite(out).all(), "non-finite predictions under bf16-mixed"
    assert len(out) == split.test.n_samples


def check_learns_every_subset(name: str) -> None:
    """On small data the method clearly beats chance, for every non-empty modality subset."""
    from mlmm.data.missingness import simulate
    from mlmm.utils import rng_for

    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    train, _ = simulate(split.train, "mcar:0.4", rng_for(0, "train-mask"))
    val, _ = simulate(split.val, "mcar:0.4", rng_for(0, "val-mask"))
    model = create_method(name, data.specs, data.task)
    trained = Trainer(max_epochs=40, batch_size=32, patience=8, seed=0, progress=False).fit(
        model, train, val
    )
    table = evaluate(trained, split.test, "none", patterns=False)
    acc = table[(table.scope == "subset") & (table.metric == "accuracy")]
    chance = 1.0 / N_CLASSES
    weak = acc[acc.value < chance + 0.25]
    assert weak.empty, f"accuracy near chance ({chance:.2f}) for subsets: " + ", ".join(
        f"{r.subset}={r.value:.2f}" for r in weak.itertuples()
    )


def check_regression(name: str) -> None:
    """Regression tasks train and predict values in target units better than the mean."""
    data = contract_dataset(task="regression")
    trained, split = _train(name, epochs=6, dataset=data)
    pred = trained.predict(split.test)
    assert pred.shape == (split.test.n_samples,)
    rmse = np.sqrt(np.mean((pred - split.test.targets) ** 2))
    assert rmse < 0.8 * split.test.targets.std(), f"regression RMSE {rmse:.3f} not below the spread"


def check_multilabel(name: str) -> None:
    """A multilabel task either trains, predicting a 0/1 matrix and per-label probabilities
    with a micro-F1 clearly above the best label-frequency baseline, or, for a method whose
    ``supported_tasks`` leaves it out, is refused at construction with one clear line."""
    from mlmm.errors import MlmmError
    from mlmm.eval.metrics import multilabel_metrics

    data = contract_dataset(task="multilabel")
    try:  # a method that composes others (a scheduler's pool) may refuse through them
        create_method(name, data.specs, data.task)
    except MlmmError as err:
        message = str(err)
        assert "multilabel" in message and "\n" not in message, f"unclear refusal: {message}"
        return
    assert "multilabel" in METHODS.get(name).obj.supported_tasks, (
        "supported_tasks leaves out multilabel, yet the method was built"
    )
    trained, split = _train(name, epochs=6, dataset=data)
    test, train_targets = split.test, split.train.targets
    pred, proba = trained.predict(test), trained.predict_proba(test)
    assert pred.shape == proba.shape == test.targets.shape, "predictions are not [N, L]"
    assert set(np.unique(pred)) <= {0, 1}, "predict must give a 0/1 label matrix"
    assert ((proba >= 0) & (proba <= 1)).all(), "predict_proba must give probabilities"
    micro = multilabel_metrics(proba, test.targets)["micro_f1"]
    # the best constant answers: every label on, or each label at its training frequency
    rate = train_targets.mean(axis=0)  # [L]
    constants = [np.ones_like(test.targets), np.tile(rate, (test.n_samples, 1))]
    baseline = max(multilabel_metrics(c, test.targets)["micro_f1"] for c in constants)
    assert micro > baseline + 0.2, f"micro-F1 {micro:.2f} not above the baseline {baseline:.2f}"


def check_estimator_contract(name: str) -> None:
    """Through the scikit-learn estimator: predict before fit raises a not-fitted error, and
    ``clone`` of a fitted estimator gives an unfitted copy with the same parameters."""
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from mlmm.estimator import MissingModalityClassifier

    data = contract_dataset()
    X, y = dict(data.inputs), data.targets
    est = MissingModalityClassifier(method=name, max_epochs=1)
    try:
        est.predict(X)
    except NotFittedError:
        pass
    else:
        raise AssertionError("predict before fit did not raise NotFittedError")
    fitted = est.fit(X, y)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params(), "clone changed the parameters"
    assert not hasattr(copy, "trained_"), "clone kept the fitted state"


def check_out_of_core(name: str) -> None:
    """Trained on an out-of-core copy of the data (:mod:`mlmm.data.lazy`), a method that
    streams (``streams_data``) predicts as when trained in memory; one that does not is
    refused in one line naming the fix."""
    from mlmm.data.lazy import open_dataset, write_dataset
    from mlmm.errors import MlmmError

    data = contract_dataset(n_samples=96)
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        train, val, test = (
            open_dataset(write_dataset(getattr(split, part), f"{tmp}/{part}"))
            for part in ("train", "val", "test")
        )
        if not METHODS.get(name).obj.streams_data:
            try:
                Trainer(max_epochs=1, progress=False).fit(
                    create_method(name, data.specs, data.task), train, val
                )
            except MlmmError as exc:
                message = str(exc)
                assert "to_memory()" in message and "\n" not in message, message
            else:
                raise AssertionError("streams_data is False, yet training out of core worked")
            return
        in_memory, out_of_core = (
            Trainer(max_epochs=1, batch_size=32, seed=0, progress=False).fit(
                create_method(name, data.specs, data.task), *parts
            )
            for parts in ((split.train, split.val), (train, val))
        )
        np.testing.assert_allclose(
            in_memory.predict_raw(split.test),
            out_of_core.predict_raw(test),
            atol=1e-5,
            err_msg="trained out of core, the method predicts differently than in memory",
        )


def check_data_parallel_declaration(name: str) -> None:
    """``supports_data_parallel`` is declared consistently: False comes with a one-line
    ``data_parallel_reason``; True has none, and the method's fit does train through the shared
    loop (``Trainer.fit_module``), the only loop that trains data-parallel."""
    cls = METHODS.get(name).obj
    supported, reason = cls.supports_data_parallel, cls.data_parallel_reason
    assert isinstance(supported, bool), "supports_data_parallel must be a bool"
    assert isinstance(reason, str) and "\n" not in reason, "data_parallel_reason is one line"
    if not supported:
        assert reason.strip(), "supports_data_parallel = False needs a data_parallel_reason"
        return
    assert not reason, "a data_parallel_reason is only for supports_data_parallel = False"

    class _CountingTrainer(Trainer):
        calls = 0

        def fit_module(self, *args, **kwargs):
            type(self).calls += 1
            return super().fit_module(*args, **kwargs)

    data = contract_dataset()
    split = train_val_test_split(data, test_size=0.25, val_size=0.15, seed=0)
    model = create_method(name, data.specs, data.task)
    _CountingTrainer(max_epochs=1, batch_size=64, progress=False).fit(model, split.train)
    assert _CountingTrainer.calls > 0, (
        "supports_data_parallel = True but fit never calls trainer.fit_module; declare it False "
        "with a data_parallel_reason"
    )


CHECKS: tuple[Callable[[str], None], ...] = (
    check_registration,
    check_hyperparameters_roundtrip,
    check_search_space,
    check_state_dict_covers_parameters,
    check_presence_patterns,
    check_absent_rows_are_not_read,
    check_batch_independence,
    check_padding_is_not_read,
    check_same_seed_same_result,
    check_save_load_roundtrip,
    check_mixed_precision,
    check_learns_every_subset,
    check_regression,
    check_multilabel,
    check_estimator_contract,
    check_out_of_core,
    check_data_parallel_declaration,
)


def method_checks(names: list[str] | None = None) -> Iterator[tuple[str, Callable[[str], None]]]:
    """``(method name, check)`` pairs for ``pytest.mark.parametrize`` over the registry."""
    for name in names or list_methods():
        for check in CHECKS:
            yield name, check


def check_method(name: str) -> None:
    """Run every contract check on one registered method; raises ``AssertionError``."""
    for _, check in method_checks([name]):
        try:
            check(name)
        except AssertionError as err:
            raise AssertionError(f"{name}: {check.__name__} failed: {err}") from err
