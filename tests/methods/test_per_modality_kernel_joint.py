"""per-modality-kernel with fusion="joint": one model over every view's Nyström features (an
absent view's block zero) and the presence indicators, trained on all rows."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.methods import create_method
from mlmm.testing import contract_dataset
from mlmm.train.trained import TrainedModel
from mlmm.train.trainer import Trainer

GRID = [1, 3, 10, 30, 100, 300, 1000]


def _views(n, seed=0, task="classification", missing=True):
    """Three views of one class signal (a ring in ``a``, shifts in ``b`` and ``c``), each
    present in about 60 % of the rows (every row with one at least), or all present."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    angle = rng.uniform(0, 2 * np.pi, size=n)
    radius = 1.0 + y + 0.3 * rng.normal(size=n)  # the class is the ring's radius
    a = np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1)
    b = rng.normal(size=(n, 3)) + 1.2 * np.eye(3)[y]
    c = rng.normal(size=(n, 4))
    c[:, 0] += 1.5 * y
    observed = rng.random((n, 3)) > 0.4
    observed[np.arange(n), rng.integers(0, 3, size=n)] = True
    observed |= not missing
    targets = y if task == "classification" else y.astype(np.float64) + rng.normal(size=n)
    return MultimodalDataset(
        specs=[
            ModalitySpec("a", "vector", (2,)),
            ModalitySpec("b", "vector", (3,)),
            ModalitySpec("c", "vector", (4,)),
        ],
        task=TaskSpec("classification", 3) if task == "classification" else TaskSpec(task),
        inputs={"a": a, "b": b, "c": c},
        targets=targets,
        observed=observed,
    )


def _subset_accuracies(trained, test):
    """Test accuracy of ``trained`` with only each subset of the three views present."""
    accuracy = {}
    for size in (1, 2, 3):
        for subset in itertools.combinations(range(3), size):
            pattern = np.zeros(3, dtype=bool)
            pattern[list(subset)] = True
            part = test.with_presence(np.tile(pattern, (test.n_samples, 1)))
            accuracy[subset] = float((trained.predict(part) == part.targets).mean())
    return accuracy


def test_the_joint_model_beats_chance_clearly_on_every_modality_subset():
    train, test = _views(240, seed=0), _views(300, seed=1, missing=False)
    model = create_method(
        "per-modality-kernel", train.specs, train.task, C="cv", fusion="joint", n_components=60
    )
    trained = Trainer(progress=False).fit(model, train)
    assert model.n_models == 1 and set(model.view_C.values()) <= set(map(float, [1, 3, 10, 30]))
    accuracy = _subset_accuracies(trained, test)
    assert min(accuracy.values()) > 0.55, accuracy  # chance: 1/3
    assert accuracy[(0, 1, 2)] > 0.7


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_the_joint_model_is_scikit_learns_on_the_centred_zero_filled_features(task):
    from sklearn.linear_model import Ridge

    data = _views(150, seed=2, task=task)
    model = create_method(
        "per-modality-kernel", data.specs, data.task, C=3.0, fusion="joint", n_components=40
    )
    trained = Trainer(progress=False).fit(model, data)
    std = trained.standardizer.transform(data)
    blocks = []
    with torch.no_grad():
        for j, name in enumerate(data.modality_names):
            x = torch.from_numpy(std.inputs[name].reshape(std.n_samples, -1)).float()
            rank = int((model.projection[name].abs().sum(1) > 0).sum())
            phi = model.features(name, x).double().numpy()[:, :rank]
            rows = std.observed[:, j]
            centred = phi - phi[rows].mean(0)  # on the mean of the rows that have the view
            blocks.append(np.where(rows[:, None], centred, 0.0))  # absent: zero block
    design = np.hstack([*blocks, std.observed.astype(float)])
    if task == "regression":  # one ridge, alpha = 1 / (2 C), on the standardised target
        sk = Ridge(alpha=1.0 / 6.0).fit(design, std.targets)
        expected = trained.standardizer.inverse_target(sk.predict(design))
        np.testing.assert_allclose(trained.predict(data).ravel(), expected.ravel(), atol=1e-4)
        return
    sk = LogisticRegression(C=3.0, max_iter=1000).fit(design, std.targets)
    logits = design @ sk.coef_.T + sk.intercept_
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(trained.predict_proba(data), expected, atol=1e-4)


def test_a_joint_model_trained_on_complete_rows_still_predicts_from_any_modality_subset():
    # fitted on complete rows, every presence indicator is constant; an uncentred block's mean
    # went into the bias, so dropping a modality shifted the logits (35-36 % on b or c alone)
    train, test = _views(240, seed=0, missing=False), _views(300, seed=1, missing=False)
    model = create_method(
        "per-modality-kernel", train.specs, train.task, C=10.0, fusion="joint", n_components=60
    )
    trained = Trainer(progress=False).fit(model, train)
    accuracy = _subset_accuracies(trained, test)
    assert min(accuracy.values()) > 0.55, accuracy  # chance: 1/3


def test_a_joint_model_saves_reloads_and_predicts_the_same_and_is_deterministic(tmp_path):
    data = _views(120, seed=3)
    params = {"C": "cv", "C_grid": GRID, "fusion": "joint", "n_components": 30}
    model = create_method("per-modality-kernel", data.specs, data.task, **params)
    assert model.resolved_hyperparameters() == {}  # nothing chosen before the fit
    trained = Trainer(progress=False, seed=0).fit(model, data)
    chosen = model.view_C["a"]
    assert chosen in GRID and model.resolved_hyperparameters() == {"C": chosen, "C_grid": None}
    assert len(model.cv_losses["C"]) == len(GRID)
    trained.save(tmp_path / "joint")
    loaded = TrainedModel.load(tmp_path / "joint")
    assert loaded.model.get_hyperparameters()["fusion"] == "joint"
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))
    again = create_method("per-modality-kernel", data.specs, data.task, **params)
    other = Trainer(progress=False, seed=5).fit(again, data)  # the seed changes nothing
    np.testing.assert_array_equal(other.predict_proba(data), trained.predict_proba(data))


def test_a_joint_auto_ensemble_member_has_a_stable_label_and_reloads(tmp_path):
    from mlmm.methods.combination.auto_ensemble import member_label

    data = contract_dataset()
    member = {"method": "per-modality-kernel", "params": {"C": "cv", "fusion": "joint"}}
    assert member_label(member) == "per-modality-kernel[C=cv,fusion=joint]"
    member["params"]["n_components"] = 20
    model = create_method(
        "auto-ensemble",
        data.specs,
        data.task,
        members=[member, {"method": "per-modality-logistic"}],
        weights=[0.5, 0.5],
    )
    trained = Trainer(progress=False).fit(model, data)
    built = model.resolved_hyperparameters()["members"][0]["params"]
    assert isinstance(built["C"], float) and built["fusion"] == "joint"
    trained.save(tmp_path / "auto")
    loaded = TrainedModel.load(tmp_path / "auto")
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))


def test_joint_regression_is_one_ridge_and_beats_the_mean():
    train, test = _views(240, seed=4, task="regression"), _views(200, seed=5, task="regression")
    model = create_method(
        "per-modality-kernel", train.specs, train.task, C="cv", fusion="joint", n_components=40
    )
    trained = Trainer(progress=False).fit(model, train)
    error = np.mean((trained.predict(test).ravel() - test.targets) ** 2)
    assert error < 0.75 * np.var(test.targets)


def test_a_joint_model_exports_to_onnx_and_answers_as_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from mlmm.serve.export import export_onnx

    data = _views(120, seed=6)
    model = create_method(
        "per-modality-kernel", data.specs, data.task, C=10.0, fusion="joint", n_components=30
    )
    trained = Trainer(progress=False).fit(model, data)
    report = export_onnx(trained, tmp_path / "model.onnx")
    assert report["max_abs_diff"] <= 1e-5 and report["patterns"] == 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fusion": "sum"}, "fusion must be one of"),
        ({"fusion": "joint", "C": {"a": 1.0, "b": 1.0, "c": 1.0}}, "one C, got a mapping"),
        ({"fusion": "joint", "evidence_scale": "cv"}, "evidence_scale scales the product rule"),
        ({"fusion": "joint", "C": "cv", "gamma_grid": [0.5, 1]}, "gamma_grid chooses"),
    ],
)
def test_bad_joint_settings_are_one_line_errors(kwargs, match):
    specs = _views(10).specs
    with pytest.raises(MlmmError, match=match) as error:
        create_method("per-modality-kernel", specs, TaskSpec("classification", 3), **kwargs)
    assert "\n" not in str(error.value)


def test_a_product_rule_artifact_written_before_the_fusion_option_loads_as_before(tmp_path):
    from mlmm.train.card import model_card
    from mlmm.train.checkpoint import save_artifact

    data = _views(90, seed=7)
    model = mlmm.create_method("per-modality-kernel", data.specs, data.task, n_components=20)
    assert model.get_hyperparameters()["fusion"] == "product" and model.n_models == 3
    # the product rule's weights keep the keys they had before fusion="joint" existed
    assert not any(key.startswith("joint") for key in model.state_dict())
    trained = Trainer(progress=False).fit(model, data)
    config = trained.config()
    del config["hyperparameters"]["fusion"]  # as mlmm wrote it before the option (cde5617)
    save_artifact(tmp_path / "old", model.state_dict(), config, card=model_card(config))
    loaded = TrainedModel.load(tmp_path / "old")
    assert loaded.model.fusion == "product"
    np.testing.assert_array_equal(loaded.predict_proba(data), trained.predict_proba(data))
