"""per-modality-kernel: Nyström RBF (or linear) logistic regressions per modality, fitted on the
rows that have the modality, fused by the product rule with its prior correction (by hand)."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from mlmm.data.batch import MultimodalBatch
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.methods.reference.per_modality_kernel import C_GRID, EVIDENCE_SCALE_GRID, nystroem
from mlmm.testing import contract_dataset
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer

SPECS = [ModalitySpec("u", "vector", (1,)), ModalitySpec("v", "vector", (2,))]


def _batch(present):
    inputs = {"u": torch.tensor([[1.0], [1.0], [5.0]]), "v": torch.tensor([[9.0, 1.0]] * 3)}
    return MultimodalBatch(inputs, torch.tensor(present), ("u", "v"))


def test_product_rule_adds_each_present_modalitys_evidence_to_the_prior():
    model = create_method(
        "per-modality-kernel", SPECS, TaskSpec("classification", 2), kernel="linear"
    )
    model.eval()
    prior_u, prior_v, prior = np.log([0.5, 0.5]), np.log([0.25, 0.75]), np.log([0.4, 0.6])
    with torch.no_grad():
        model.coef["u"].copy_(torch.tensor([[0.0], [1.0]]))
        model.coef["v"].copy_(torch.tensor([[0.0, 0.0], [0.0, 2.0]]))
        model.intercept["v"].copy_(torch.tensor([0.0, -1.0]))
        model.log_prior.copy_(torch.tensor(np.stack([prior_u, prior_v, prior])))
        out = model(_batch([[True, True], [True, False], [False, True]])).prediction
    p = torch.softmax(out, 1).numpy()

    def log_softmax(z):
        z = np.asarray(z, dtype=float)
        return z - np.log(np.exp(z).sum())

    ev_u = log_softmax([0.0, 1.0]) - prior_u  # u = 1
    ev_v = log_softmax([0.0, 2.0 - 1.0]) - prior_v  # v = (9, 1): 2 * 1 - 1
    for row, logit in enumerate([prior + ev_u + ev_v, prior + ev_u, prior + ev_v]):
        np.testing.assert_allclose(p[row], np.exp(log_softmax(logit)), rtol=1e-5)
    # row 3's u (= 5) is absent and never read: it equals the v-only answer of a u = 1 row
    assert abs(p[2, 1] - np.exp(log_softmax(prior + ev_v))[1]) < 1e-6


def test_nystroem_features_reproduce_the_kernel_on_the_landmarks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4))
    landmarks, projection = nystroem(x, 0.25, 100, np.random.default_rng(1))
    assert len(landmarks) == 30  # fewer rows than n_components: every row is a landmark

    def kernel(a, b):
        return np.exp(-0.25 * ((a[:, None] - b[None]) ** 2).sum(-1))

    phi = kernel(x, landmarks) @ projection.T
    np.testing.assert_allclose(phi @ phi.T, kernel(x, x), atol=1e-5)
    few, _ = nystroem(x, 0.25, 10, np.random.default_rng(1))
    assert few.shape == (10, 4) and len(np.unique(few, axis=0)) == 10


def test_linear_models_are_scikit_learns_on_the_rows_that_have_each_modality():
    data = contract_dataset()
    rng = np.random.default_rng(1)
    present = rng.random(data.observed.shape) > 0.5
    present[~present.any(1), 0] = True
    data = data.with_presence(present)
    model = create_method("per-modality-kernel", data.specs, data.task, kernel="linear", C=0.3)
    trained = Trainer(progress=False).fit(model, data)
    std = trained.standardizer.transform(data)
    for j, name in enumerate(data.modality_names):
        rows = std.observed[:, j]
        x = std.inputs[name][rows].reshape(rows.sum(), -1)
        sk = LogisticRegression(C=0.3, max_iter=1000).fit(x, std.targets[rows])
        np.testing.assert_allclose(model.coef[name].numpy(), sk.coef_, atol=1e-4)
        counts = np.bincount(std.targets[rows], minlength=data.task.n_classes)
        np.testing.assert_allclose(
            model.log_prior[j].numpy(), np.log(counts / counts.sum()), rtol=1e-5
        )


def test_rbf_beats_linear_on_a_ring_and_its_landmarks_do_not_depend_on_the_seed():
    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 2))
    y = (np.hypot(x[:, 0], x[:, 1]) > 1.2).astype(np.int64)  # a ring: no linear boundary
    from mlmm.data.dataset import MultimodalDataset

    data = MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))],
        task=TaskSpec("classification", 2),
        inputs={"a": x, "b": rng.normal(size=(n, 3))},
        targets=y,
    )
    accuracy = {}
    for kernel in ("rbf", "linear"):
        model = create_method(
            "per-modality-kernel", data.specs, data.task, kernel=kernel, gamma=1.0
        )
        trained = Trainer(progress=False, seed=3).fit(model, data)
        accuracy[kernel] = float((trained.predict(data) == y).mean())
    assert accuracy["rbf"] > 0.9 and accuracy["linear"] < 0.75
    again = create_method("per-modality-kernel", data.specs, data.task, n_components=50)
    other = create_method("per-modality-kernel", data.specs, data.task, n_components=50)
    Trainer(progress=False, seed=3).fit(again, data)
    Trainer(progress=False, seed=4).fit(other, data)
    assert torch.equal(again.landmarks["a"], other.landmarks["a"])
    assert len(torch.unique(again.landmarks["a"], dim=0)) == 50  # 50 of the 400 rows


@pytest.mark.parametrize(
    "kwargs, match",
    [({"kernel": "poly"}, "kernel must be one of"), ({"gamma": 0.0}, "gamma"), ({"C": -1.0}, "C")],
)
def test_bad_settings_are_one_line_errors(kwargs, match):
    with pytest.raises(MlmmError, match=match):
        create_method("per-modality-kernel", SPECS, TaskSpec("classification", 2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"C": "auto"}, 'C must be a positive number, "cv" or a mapping'),
        ({"C": {"u": 1.0}}, "must name every modality"),
        ({"C": {"u": 1.0, "v": -1.0}}, r"C\['v'\]"),
        ({"evidence_scale": 0.0}, "evidence_scale must be in"),
        ({"evidence_scale": "auto"}, 'evidence_scale must be a positive number or "cv"'),
    ],
)
def test_bad_choices_are_one_line_errors(kwargs, match):
    with pytest.raises(MlmmError, match=match) as err:
        create_method("per-modality-kernel", SPECS, TaskSpec("classification", 2), **kwargs)
    assert "\n" not in str(err.value)


def test_regression_refuses_an_evidence_scale_and_chooses_C_by_squared_error():
    task = TaskSpec("regression")
    for scale in (0.5, "cv"):
        with pytest.raises(MlmmError, match="leave it at 1.0"):
            create_method("per-modality-kernel", SPECS, task, evidence_scale=scale)
    data = contract_dataset(task="regression")
    model = create_method("per-modality-kernel", data.specs, data.task, C="cv", n_components=20)
    Trainer(progress=False).fit(model, data)
    for name, losses in model.cv_losses["C"].items():
        assert model.view_C[name] == C_GRID[int(np.argmin(losses))]


def _two_views(n, rng, b_shape=(40,)):
    """View ``a``: one clean linear signal (wants a weak penalty); view ``b``: a weak signal
    in one column among many noise columns, few rows (wants a strong one)."""
    from mlmm.data.dataset import MultimodalDataset

    y = rng.integers(0, 2, size=n)
    a = rng.normal(size=(n, 2))
    a[:, 0] += 3.0 * (2 * y - 1)
    b = rng.normal(size=(n, *b_shape))
    b[:, 0] += 0.5 * (2 * y - 1)
    return MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", b_shape)],
        task=TaskSpec("classification", 2),
        inputs={"a": a, "b": b},
        targets=y,
    )


def test_C_cv_chooses_each_views_C_by_its_own_held_out_loss_deterministically():
    data = _two_views(90, np.random.default_rng(0))
    fitted = []
    for seed in (0, 1):
        model = create_method("per-modality-kernel", data.specs, data.task, C="cv", kernel="linear")
        Trainer(progress=False, seed=seed).fit(model, data)
        fitted.append(model)
    model = fitted[0]
    for name, losses in model.cv_losses["C"].items():
        assert len(losses) == len(C_GRID)
        assert model.view_C[name] == C_GRID[int(np.argmin(losses))]
    assert model.view_C["a"] == max(C_GRID) and model.view_C["b"] == min(C_GRID)
    # the same choice and the same model whatever the trainer's seed (fixed folds)
    assert fitted[1].view_C == model.view_C and fitted[1].cv_losses == model.cv_losses
    assert all(torch.equal(model.coef[n], fitted[1].coef[n]) for n in ("a", "b"))
    # each view's model is the one a fixed C gives
    fixed = create_method(
        "per-modality-kernel", data.specs, data.task, C=model.view_C, kernel="linear"
    )
    Trainer(progress=False).fit(fixed, data)
    assert all(torch.equal(model.coef[n], fixed.coef[n]) for n in ("a", "b"))


def test_evidence_scale_cv_halves_the_evidence_of_two_copies_of_one_view():
    from mlmm.data.dataset import MultimodalDataset

    rng = np.random.default_rng(0)
    n = 600
    y = rng.integers(0, 2, size=n)
    x = rng.normal(size=(n, 2))
    x[:, 0] += 1.0 * (2 * y - 1)  # overlapping classes: calibrated, not separable
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))]
    task = TaskSpec("classification", 2)
    copies = MultimodalDataset(specs=specs, task=task, inputs={"a": x, "b": x.copy()}, targets=y)
    model = create_method("per-modality-kernel", specs, task, kernel="linear", evidence_scale="cv")
    Trainer(progress=False).fit(model, copies)
    losses = model.cv_losses["evidence_scale"]
    assert model.beta == EVIDENCE_SCALE_GRID[int(np.argmin(losses))]
    assert 0.375 <= model.beta <= 0.625  # the product rule (1) counts the one view twice
    assert losses[EVIDENCE_SCALE_GRID.index(0.5)] < losses[-1]
    # the fused answer is the prior plus beta times the summed evidence
    product = create_method("per-modality-kernel", specs, task, kernel="linear")
    Trainer(progress=False).fit(product, copies)
    batch = MultimodalBatch.from_dataset(copies)
    with torch.no_grad():
        prior = product.log_prior[-1]
        expected = prior + model.beta * (product(batch).prediction - prior)
        torch.testing.assert_close(model(batch).prediction, expected)


def test_chosen_C_and_beta_are_recorded_and_a_saved_model_predicts_the_same(tmp_path):
    data = _two_views(120, np.random.default_rng(1), b_shape=(6,))
    model = create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        evidence_scale="cv",
        n_components=30,
    )
    assert model.resolved_hyperparameters() == {}  # nothing chosen before the fit
    trained = Trainer(progress=False).fit(model, data)
    resolved = model.resolved_hyperparameters()
    assert resolved == {"C": model.view_C, "evidence_scale": model.beta}
    trained.save(tmp_path / "kernel")
    loaded = TrainedModel.load(tmp_path / "kernel")
    assert loaded.model.get_hyperparameters()["C"] == "cv"
    assert loaded.model.get_hyperparameters()["evidence_scale"] == "cv"
    assert loaded.model.view_C == model.view_C and loaded.model.beta == model.beta
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_as_an_auto_ensemble_member_the_chosen_C_is_recorded_and_reloads(tmp_path):
    data = contract_dataset()
    members = [{"method": "per-modality-kernel", "params": {"C": "cv", "n_components": 20}}]
    members.append({"method": "per-modality-logistic"})
    model = create_method(
        "auto-ensemble", data.specs, data.task, members=members, weights=[0.5, 0.5]
    )
    trained = Trainer(progress=False).fit(model, data)
    built = model.resolved_hyperparameters()["members"][0]["params"]["C"]
    assert built == model.models["m0"].view_C and set(built) == set(data.modality_names)
    trained.save(tmp_path / "auto")
    loaded = TrainedModel.load(tmp_path / "auto")
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_a_view_in_too_few_rows_gets_the_fallback_C_and_a_rare_class_does_not_crash():
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.methods.reference.per_modality_kernel import CV_FALLBACK_C, CV_FOLDS

    rng = np.random.default_rng(0)
    n = 30
    y = rng.integers(0, 3, size=n)
    inputs = {"a": rng.normal(size=(n, 2)), "b": rng.normal(size=(n, 3))}
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))]
    task = TaskSpec("classification", 3)
    for rows_b in (CV_FOLDS - 1, CV_FOLDS + 1):  # too few to fold; three folds of 1-2 rows
        observed = np.ones((n, 2), dtype=bool)
        observed[rows_b:, 1] = False
        data = MultimodalDataset(specs, task, inputs, y, observed=observed)
        model = create_method(
            "per-modality-kernel", specs, task, C="cv", evidence_scale="cv", n_components=10
        )
        Trainer(progress=False).fit(model, data)
        assert len(model.cv_losses["C"]["a"]) == len(C_GRID)
        if rows_b < CV_FOLDS:
            assert model.view_C["b"] == CV_FALLBACK_C and model.cv_losses["C"]["b"] == []
        else:
            assert np.isfinite(model.cv_losses["C"]["b"]).all() and model.view_C["b"] in C_GRID
        assert model.beta in EVIDENCE_SCALE_GRID


@pytest.mark.parametrize(
    "grid, expected", [([100, 1000], 100.0), ([3, 300], 3.0), ([1, 100], 1.0), ([300], 300.0)]
)
def test_a_view_in_too_few_rows_gets_the_C_grid_value_nearest_the_fallback(grid, expected):
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.methods.reference.per_modality_kernel import CV_FOLDS

    rng = np.random.default_rng(0)
    n = 30
    y = rng.integers(0, 2, size=n)
    inputs = {"a": rng.normal(size=(n, 2)), "b": rng.normal(size=(n, 3))}
    observed = np.ones((n, 2), dtype=bool)
    observed[CV_FOLDS - 1 :, 1] = False  # view b: too few rows to fold
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))]
    data = MultimodalDataset(specs, TaskSpec("classification", 2), inputs, y, observed=observed)
    model = create_method(
        "per-modality-kernel", data.specs, data.task, C="cv", C_grid=grid, kernel="linear"
    )
    Trainer(progress=False).fit(model, data)
    assert model.cv_losses["C"]["b"] == [] and model.view_C["b"] == expected
    assert model.view_C["a"] in model.C_grid


def test_evidence_scale_cv_scores_the_out_of_fold_product_rule_with_per_view_priors():
    """The fused losses ``"cv"`` compares are those of the model itself fitted on each fold's
    other rows (its per-view priors included) and asked for the held-out rows; view ``b`` is
    mostly present for class 1, so its prior differs from the overall one."""
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.methods.reference.per_modality_kernel import cv_folds

    rng = np.random.default_rng(3)
    n = 150
    y = rng.integers(0, 2, size=n)
    a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    a[:, 0] += 1.0 * (2 * y - 1)
    b[:, 0] += 0.8 * (2 * y - 1)
    observed = np.ones((n, 2), dtype=bool)
    observed[:, 1] = rng.random(n) < np.where(y == 1, 0.8, 0.3)
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (2,))]
    task = TaskSpec("classification", 2)
    data = MultimodalDataset(specs, task, {"a": a, "b": b}, y, observed=observed)
    kwargs = {"kernel": "linear", "C": {"a": 1.0, "b": 3.0}}
    model = create_method("per-modality-kernel", specs, task, evidence_scale="cv", **kwargs)
    model.fit_classical(MultimodalBatch.from_dataset(data), None, 0)  # inputs as given
    log_p = np.zeros((n, 2))  # [N, K] out-of-fold prior and summed evidence, by forward
    prior = np.zeros((n, 2))
    for fit_rows, held in cv_folds(y, True):
        fold = create_method("per-modality-kernel", specs, task, **kwargs)
        fold.fit_classical(MultimodalBatch.from_dataset(data, fit_rows), None, 0)
        with torch.no_grad():
            log_p[held] = fold(MultimodalBatch.from_dataset(data, held)).prediction.numpy()
            prior[held] = fold.log_prior[-1].numpy()
    expected = []
    for beta in EVIDENCE_SCALE_GRID:
        z = torch.from_numpy(prior + beta * (log_p - prior)).log_softmax(1)
        expected.append(-z[np.arange(n), y].mean().item())
    np.testing.assert_allclose(model.cv_losses["evidence_scale"], expected, rtol=1e-5)


WIDE_GRID = [1, 3, 10, 30, 100, 300, 1000]


def test_C_grid_defaults_to_C_GRID_and_the_same_grid_given_fits_the_same_model():
    data = _two_views(90, np.random.default_rng(0))
    default = create_method("per-modality-kernel", data.specs, data.task, C="cv", kernel="linear")
    assert default.C_grid is None and default.get_hyperparameters()["C_grid"] is None
    given = create_method(  # the same values, unsorted and repeated: stored sorted, once
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        kernel="linear",
        C_grid=[100, 3, 1.0, 30, 10, 3],
    )
    assert given.C_grid == C_GRID and isinstance(given.C_grid, tuple)
    for model in (default, given):
        Trainer(progress=False).fit(model, data)
    assert given.view_C == default.view_C and given.cv_losses == default.cv_losses
    assert all(torch.equal(given.coef[n], default.coef[n]) for n in ("a", "b"))


def test_a_wider_C_grid_chooses_beyond_100_where_the_held_out_loss_still_falls():
    data = _two_views(90, np.random.default_rng(0))  # view a: clean, C_GRID's top binds
    default = create_method("per-modality-kernel", data.specs, data.task, C="cv", kernel="linear")
    wide = create_method(
        "per-modality-kernel", data.specs, data.task, C="cv", kernel="linear", C_grid=WIDE_GRID
    )
    for model in (default, wide):
        Trainer(progress=False).fit(model, data)
    assert default.view_C["a"] == 100.0
    losses = wide.cv_losses["C"]["a"]
    assert len(losses) == len(WIDE_GRID) and losses[:5] == default.cv_losses["C"]["a"]
    assert losses[5] < losses[4]  # still falling past 100
    assert wide.view_C["a"] in (300.0, 1000.0)
    assert wide.view_C["a"] == WIDE_GRID[int(np.argmin(losses))]
    assert wide.view_C["b"] == default.view_C["b"] == 1.0  # the noisy view keeps the low end


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"C": "cv", "C_grid": []}, "C_grid must hold at least one positive number"),
        ({"C": "cv", "C_grid": [1.0, 0.0]}, r"C_grid\[1\] must be in \(0"),
        ({"C": "cv", "C_grid": [-3]}, r"C_grid\[0\] must be in \(0"),
        ({"C": "cv", "C_grid": [1.0, float("nan")]}, r"C_grid\[1\] must be a finite number"),
        ({"C": "cv", "C_grid": [float("inf")]}, r"C_grid\[0\] must be a finite number"),
        ({"C": "cv", "C_grid": ["10"]}, r"C_grid\[0\] must be a number"),
        ({"C": "cv", "C_grid": "1,10"}, "C_grid must be a list of positive numbers"),
        ({"C": "cv", "C_grid": 10.0}, "C_grid must be a list of positive numbers"),
        (
            {"C": "cv", "C_grid": np.array([[1.0, 3.0], [10.0, 30.0]])},
            r"C_grid must be a list of positive numbers, got an array of shape \(2, 2\)",
        ),
        ({"C": "cv", "C_grid": [np.bool_(True)]}, r"C_grid\[0\] must be a number, got True"),
        (
            {"C": 10.0, "C_grid": [1, 10]},
            r'C_grid is the grid C="cv" chooses from, got it with C=10',
        ),
        ({"C": {"u": 1.0, "v": 2.0}, "C_grid": [1, 10]}, 'give C="cv", or leave C_grid out'),
    ],
)
def test_bad_C_grids_are_one_line_errors(kwargs, match):
    with pytest.raises(MlmmError, match=match) as err:
        create_method("per-modality-kernel", SPECS, TaskSpec("classification", 2), **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "grid",
    [
        np.array([30, 1, 10]),
        [np.int64(30), np.float32(1.0), 10],
        (np.float64(10.0), 30, np.int32(1)),
    ],
)
def test_numpy_arrays_and_scalars_make_the_same_C_grid_as_plain_numbers(grid):
    model = create_method(
        "per-modality-kernel", SPECS, TaskSpec("classification", 2), C="cv", C_grid=grid
    )
    assert model.C_grid == (1.0, 10.0, 30.0)
    assert all(type(c) is float for c in model.C_grid)  # JSON-ready in the artifact


def test_a_C_grid_is_saved_with_the_model_and_reloads_with_its_choice(tmp_path):
    data = _two_views(120, np.random.default_rng(1), b_shape=(6,))
    model = create_method(
        "per-modality-kernel", data.specs, data.task, C="cv", C_grid=WIDE_GRID, n_components=30
    )
    trained = Trainer(progress=False).fit(model, data)
    assert set(model.view_C.values()) <= set(WIDE_GRID)
    # built from the choice: the grid, which only "cv" reads, is not passed with it
    assert model.resolved_hyperparameters() == {"C": model.view_C, "C_grid": None}
    trained.save(tmp_path / "kernel")
    loaded = TrainedModel.load(tmp_path / "kernel")
    given = loaded.model.get_hyperparameters()
    # as before saving: a tuple (JSON gives a list back; the bug: it stayed one)
    assert given["C"] == "cv" and given["C_grid"] == tuple(WIDE_GRID) == model.C_grid
    assert isinstance(loaded.model.C_grid, tuple)
    assert loaded.model.view_C == model.view_C
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_an_artifact_saved_before_C_grid_existed_reloads_and_predicts_the_same(tmp_path):
    import json

    from mlmm.train.checkpoint import CONFIG_FILE, MANIFEST_FILE

    data = _two_views(120, np.random.default_rng(1), b_shape=(6,))
    model = create_method("per-modality-kernel", data.specs, data.task, C="cv", n_components=30)
    trained = Trainer(progress=False).fit(model, data)
    path = trained.save(tmp_path / "kernel")
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["hyperparameters"]["C_grid"]  # as written by mlmm before the option
    assert config["resolved_hyperparameters"] == {"C": model.view_C}
    (path / CONFIG_FILE).write_text(json.dumps(config))
    (path / MANIFEST_FILE).unlink()  # older artifacts had none
    loaded = TrainedModel.load(path)
    assert loaded.model.C == "cv" and loaded.model.C_grid is None
    assert loaded.model.view_C == model.view_C
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_an_auto_ensemble_member_with_a_C_grid_has_a_stable_label_and_reloads(tmp_path):
    from mlmm.methods.combination.auto_ensemble import member_label

    data = contract_dataset()
    kernel = {"method": "per-modality-kernel", "params": {"C": "cv", "C_grid": WIDE_GRID}}
    label = "per-modality-kernel[C=cv,C_grid=[1, 3, 10, 30, 100, 300, 1000]]"
    assert member_label(kernel) == label
    assert member_label({**kernel, "params": dict(reversed(kernel["params"].items()))}) == label
    member = {**kernel, "params": {**kernel["params"], "n_components": 20}}
    model = create_method(
        "auto-ensemble",
        data.specs,
        data.task,
        members=[member, {"method": "per-modality-logistic"}],
        weights=[0.5, 0.5],
    )
    trained = Trainer(progress=False).fit(model, data)
    trained.save(tmp_path / "auto")
    loaded = TrainedModel.load(tmp_path / "auto")
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


GAMMA_GRID = [0.25, 0.5, 1.0]


def _wiggly_views(n, rng):
    """View ``a``: the class flips along one axis several times (a narrow kernel fits it,
    a wide one smooths it away); view ``b``: a plain linear signal."""
    from mlmm.data.dataset import MultimodalDataset

    t = rng.uniform(-3, 3, size=n)
    y = (np.sin(3 * t) > 0).astype(np.int64)
    b = rng.normal(size=(n, 2))
    b[:, 0] += 1.5 * (2 * y - 1)
    return MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (1,)), ModalitySpec("b", "vector", (2,))],
        task=TaskSpec("classification", 2),
        inputs={"a": t[:, None], "b": b},
        targets=y,
    )


def test_gamma_grid_chooses_each_views_gamma_jointly_with_C_and_its_features_use_it():
    data = _wiggly_views(300, np.random.default_rng(0))
    model = create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        gamma_grid=[1, 0.25, 0.5],  # stored sorted
        n_components=60,
    )
    assert model.gamma_grid == tuple(GAMMA_GRID) and model.view_gamma is None
    Trainer(progress=False).fit(model, data)
    for name in ("a", "b"):
        table = np.asarray(model.cv_losses["gamma"][name])  # [gamma, C]
        assert table.shape == (len(GAMMA_GRID), len(C_GRID))
        i, j = np.unravel_index(np.argmin(table), table.shape)  # first minimum: smaller gamma
        assert (model.view_gamma[name], model.view_C[name]) == (GAMMA_GRID[i], C_GRID[j])
        assert model.cv_losses["C"][name] == table[i].tolist()
    # the narrow width wins clearly on the wiggly view: its best loss well under gamma=0.5's
    wiggly = np.asarray(model.cv_losses["gamma"]["a"])
    assert model.view_gamma["a"] == 1.0 and wiggly[2].min() < 0.9 * wiggly[1].min()
    # the same model as one built with the chosen widths and penalties (same landmarks)
    plain = create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C=model.view_C,
        gamma=model.view_gamma,
        n_components=60,
    )
    Trainer(progress=False).fit(plain, data)
    for name in ("a", "b"):
        assert torch.equal(plain.landmarks[name], model.landmarks[name])
        assert torch.equal(plain.projection[name], model.projection[name])
        assert torch.equal(plain.coef[name], model.coef[name])


def test_a_regression_gamma_grid_chooses_each_views_width_by_held_out_squared_error():
    from mlmm.data.dataset import MultimodalDataset

    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, size=300)
    b = rng.normal(size=(300, 2))
    y = (np.sin(3 * t) + 0.5 * b[:, 0]).astype(np.float32)  # a: wiggly part, b: linear part
    data = MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (1,)), ModalitySpec("b", "vector", (2,))],
        task=TaskSpec("regression"),
        inputs={"a": t[:, None], "b": b},
        targets=y,
    )
    model = create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        gamma_grid=GAMMA_GRID,
        n_components=60,
    )
    Trainer(progress=False).fit(model, data)
    for name in ("a", "b"):
        table = np.asarray(model.cv_losses["gamma"][name])  # [gamma, C]
        i, j = np.unravel_index(np.argmin(table), table.shape)
        assert (model.view_gamma[name], model.view_C[name]) == (GAMMA_GRID[i], C_GRID[j])
    # mean squared errors of the standardised target (a log loss of one column would be 0):
    # view a alone leaves the linear part's share of the variance, view b the sine's
    share = np.var(0.5 * b[:, 0]) / y.var()  # about 0.3
    assert share < np.min(model.cv_losses["gamma"]["a"]) < share + 0.1
    assert 1 - share < np.min(model.cv_losses["gamma"]["b"]) < 1 - share + 0.1
    assert model.view_gamma["a"] == 1.0  # the narrow width fits the sine best


def test_a_gamma_grid_of_the_default_gamma_alone_fits_the_model_without_one():
    data = _two_views(120, np.random.default_rng(1), b_shape=(6,))
    default = create_method("per-modality-kernel", data.specs, data.task, C="cv", n_components=30)
    one = create_method(
        "per-modality-kernel", data.specs, data.task, C="cv", gamma_grid=[0.5], n_components=30
    )
    for model in (default, one):
        Trainer(progress=False).fit(model, data)
    assert one.view_C == default.view_C and one.view_gamma == {"a": 0.5, "b": 0.5}
    assert one.cv_losses["C"] == default.cv_losses["C"]
    assert all(torch.equal(one.coef[n], default.coef[n]) for n in ("a", "b"))
    assert all(torch.equal(one.projection[n], default.projection[n]) for n in ("a", "b"))


def test_a_gamma_grid_is_saved_with_the_model_and_reloads_with_its_choice(tmp_path):
    data = _wiggly_views(150, np.random.default_rng(2))
    model = create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        C_grid=[1, 10, 100],
        gamma_grid=GAMMA_GRID,
        n_components=30,
    )
    trained = Trainer(progress=False).fit(model, data)
    # a width other than 0.5: a reload that dropped the choice would predict otherwise
    assert set(model.view_gamma.values()) != {0.5}
    assert model.resolved_hyperparameters() == {
        "C": model.view_C,
        "C_grid": None,
        "gamma": model.view_gamma,
        "gamma_grid": None,
    }
    trained.save(tmp_path / "kernel")
    loaded = TrainedModel.load(tmp_path / "kernel")
    given = loaded.model.get_hyperparameters()
    assert given["gamma"] == 0.5 and given["gamma_grid"] == tuple(GAMMA_GRID)
    assert isinstance(given["C_grid"], tuple) and isinstance(given["gamma_grid"], tuple)
    assert loaded.model.view_gamma == model.view_gamma and loaded.model.view_C == model.view_C
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_an_artifact_saved_before_gamma_grid_existed_reloads_and_predicts_the_same(tmp_path):
    import json

    from mlmm.train.checkpoint import CONFIG_FILE, MANIFEST_FILE

    data = _two_views(120, np.random.default_rng(1), b_shape=(6,))
    model = create_method(
        "per-modality-kernel", data.specs, data.task, C="cv", C_grid=WIDE_GRID, n_components=30
    )
    trained = Trainer(progress=False).fit(model, data)
    path = trained.save(tmp_path / "kernel")
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["hyperparameters"]["gamma_grid"]  # as written by mlmm before the option
    (path / CONFIG_FILE).write_text(json.dumps(config))
    (path / MANIFEST_FILE).unlink()
    loaded = TrainedModel.load(path)
    assert loaded.model.gamma_grid is None and loaded.model.view_gamma == {"a": 0.5, "b": 0.5}
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_a_view_in_too_few_rows_gets_the_gamma_grid_value_nearest_the_default():
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.methods.reference.per_modality_kernel import CV_FOLDS

    rng = np.random.default_rng(0)
    n = 30
    y = rng.integers(0, 2, size=n)
    inputs = {"a": rng.normal(size=(n, 2)), "b": rng.normal(size=(n, 3))}
    observed = np.ones((n, 2), dtype=bool)
    observed[CV_FOLDS - 1 :, 1] = False  # view b: too few rows to fold
    specs = [ModalitySpec("a", "vector", (2,)), ModalitySpec("b", "vector", (3,))]
    data = MultimodalDataset(specs, TaskSpec("classification", 2), inputs, y, observed=observed)
    model = create_method(
        "per-modality-kernel", specs, data.task, C="cv", gamma_grid=[0.25, 1.0, 4.0]
    )
    Trainer(progress=False).fit(model, data)
    assert model.view_gamma["b"] == 0.25  # 0.25 and 1 as near 0.5 on a log scale: the smaller
    assert model.cv_losses["C"]["b"] == [] and model.view_C["b"] == 10.0
    assert model.view_gamma["a"] in (0.25, 1.0, 4.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"C": "cv", "gamma_grid": []}, "gamma_grid must hold at least one positive number"),
        ({"C": "cv", "gamma_grid": [0.5, 0.0]}, r"gamma_grid\[1\] must be in \(0"),
        ({"C": "cv", "gamma_grid": [float("nan")]}, r"gamma_grid\[0\] must be a finite number"),
        ({"C": "cv", "gamma_grid": "0.5"}, "gamma_grid must be a list of positive numbers"),
        ({"C": "cv", "gamma_grid": 0.5}, r"gamma_grid must be a list .*e\.g\. \[0\.25"),
        (
            {"C": 10.0, "gamma_grid": [0.5, 1]},
            r'gamma_grid is chosen jointly with C="cv", got it with C=10',
        ),
        ({"gamma_grid": [0.5, 1]}, 'give C="cv", or leave gamma_grid out'),
        (
            {"C": "cv", "kernel": "linear", "gamma_grid": [0.5, 1]},
            'gamma_grid sets the width of the "rbf" kernel',
        ),
        (
            {"C": "cv", "gamma": 2.0, "gamma_grid": [0.5, 1]},
            "gamma_grid chooses each modality's gamma, got it with gamma=2.0",
        ),
        (
            {"C": "cv", "gamma": {"u": 1.0, "v": 1.0}, "gamma_grid": [0.5, 1]},
            "leave gamma at its default 0.5, or leave gamma_grid out",
        ),
        ({"gamma": {"u": 1.0}}, "gamma as a mapping must name every modality"),
        ({"gamma": {"u": 1.0, "v": 0.0}}, r"gamma\['v'\] must be in"),
    ],
)
def test_bad_gamma_grids_are_one_line_errors(kwargs, match):
    with pytest.raises(MlmmError, match=match) as err:
        create_method("per-modality-kernel", SPECS, TaskSpec("classification", 2), **kwargs)
    assert "\n" not in str(err.value)


def test_an_auto_ensemble_member_with_a_gamma_grid_reloads_with_its_widths(tmp_path):
    data = contract_dataset()
    params = {"C": "cv", "gamma_grid": GAMMA_GRID, "n_components": 20}
    model = create_method(
        "auto-ensemble",
        data.specs,
        data.task,
        members=[{"method": "per-modality-kernel", "params": params}],
        weights=[1.0],
    )
    trained = Trainer(progress=False).fit(model, data)
    widths = model.models["m0"].view_gamma
    assert set(widths) == set(data.modality_names) and set(widths.values()) <= set(GAMMA_GRID)
    assert set(widths.values()) != {0.5}  # else a reload that dropped them would look right
    trained.save(tmp_path / "auto")
    loaded = TrainedModel.load(tmp_path / "auto")
    assert loaded.model.models["m0"].view_gamma == widths
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))
