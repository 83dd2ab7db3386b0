"""Device and precision in the shared trainer: bf16-mixed on the CPU really autocasts (training
and validation), learns, keeps float32 weights and reloads in float32; 16-mixed, an unknown
precision and a CUDA request without a GPU are one-line errors; methods that fit outside the
loop record float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mlmm
from mlmm.data.dataset import MultimodalDataset
from mlmm.data.specs import ModalitySpec, TaskSpec
from mlmm.errors import MlmmError
from mlmm.train.trainer import PRECISIONS, Trainer, check_precision

SPECS = (ModalitySpec("a", "vector", (4,)), ModalitySpec("b", "vector", (3,)))


def data(n: int, seed: int) -> MultimodalDataset:
    """Three classes, shifted along every feature of 'a' and 'b'; a quarter of 'b' missing."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    inputs = {
        "a": rng.normal(size=(n, 4)) + 1.5 * y[:, None],
        "b": rng.normal(size=(n, 3)) + 1.0 * y[:, None],
    }
    observed = np.ones((n, 2), dtype=bool)
    observed[rng.random(n) < 0.25, 1] = False
    return MultimodalDataset(SPECS, TaskSpec("classification", 3), inputs, y, observed=observed)


def model(name: str = "hemis"):
    return mlmm.create_method(name, SPECS, TaskSpec("classification", 3))


def trainer(**kw) -> Trainer:
    return Trainer(**{"max_epochs": 15, "batch_size": 32, "lr": 1e-2, "progress": False, **kw})


class DtypeProbe:
    """Records the dtype of every Linear output, with whether the module was training."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.seen: set[tuple[bool, torch.dtype]] = set()
        for sub in module.modules():
            if isinstance(sub, torch.nn.Linear):
                sub.register_forward_hook(self.hook)

    def hook(self, module, inputs, output) -> None:
        self.seen.add((module.training, output.dtype))


def test_bf16_mixed_on_the_cpu_autocasts_trains_and_predicts_finite_values():
    train, val, test = data(300, 0), data(90, 1), data(150, 2)
    net = model()
    probe = DtypeProbe(net)
    trained = trainer(precision="bf16-mixed", max_epochs=8).fit(net, train, val)
    # the shared loop and its validation ran under bfloat16 autocast: not silently float32
    assert (True, torch.bfloat16) in probe.seen
    assert (False, torch.bfloat16) in probe.seen
    assert (True, torch.float32) not in probe.seen
    assert trained.precision == "bf16-mixed"
    assert trained.trainer_config["precision"] == "bf16-mixed"
    assert {p.dtype for p in trained.model.parameters()} == {torch.float32}
    proba = trained.predict_proba(test)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1.0)
    accuracy = (proba.argmax(1) == test.targets).mean()
    assert accuracy > 0.6  # chance is 1/3
    probe.seen.clear()
    trained.predict(test)
    assert probe.seen == {(False, torch.bfloat16)}  # prediction under the training autocast
    assert np.isfinite(trained.histories[0].best_val_loss)


def test_bf16_mixed_learns_about_as_well_as_float32():
    train, val, test = data(300, 0), data(90, 1), data(150, 2)
    scores = {}
    for precision in ("32", "bf16-mixed"):
        trained = trainer(precision=precision, max_epochs=8).fit(model("late-fusion"), train, val)
        scores[precision] = (trained.predict(test) == test.targets).mean()
    assert scores["bf16-mixed"] >= scores["32"] - 0.05, scores


def test_the_artifact_holds_float32_weights_and_reloads_predicting_in_float32(tmp_path):
    train, val, test = data(200, 0), data(60, 1), data(90, 2)
    trained = trainer(precision="bf16-mixed", max_epochs=5).fit(model(), train, val)
    trained.save(tmp_path / "m")
    loaded = mlmm.TrainedModel.load(tmp_path / "m")
    assert loaded.precision == "32" and loaded.trainer_config["precision"] == "bf16-mixed"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    probe = DtypeProbe(loaded.model)
    reloaded = loaded.predict_proba(test)
    assert probe.seen == {(False, torch.float32)}
    # the same weights: equal to the in-memory model asked to predict in float32
    np.testing.assert_array_equal(reloaded, trained.to("cpu", precision=32).predict_proba(test))
    assert trained.precision == "32"
    # and close to its bfloat16 predictions (bfloat16 keeps about 3 significant digits)
    bf16 = trained.to("cpu", precision="bf16-mixed").predict_proba(test)
    assert np.abs(bf16 - reloaded).max() < 0.05


@pytest.mark.parametrize("value", ["16", "fp16", "bf16", 16, 32.0, True, None, "float32"])
def test_an_unknown_precision_is_one_line_listing_the_valid_values(value):
    with pytest.raises(MlmmError, match=r"precision must be one of \['32', 'bf16-mixed'") as err:
        Trainer(precision=value)
    assert "\n" not in str(err.value)


def test_precision_32_as_an_integer_is_the_string():
    assert check_precision(32) == "32"
    assert Trainer(precision=32).config()["precision"] == "32"
    assert Trainer().config()["precision"] == "32"
    assert set(PRECISIONS) == {"32", "bf16-mixed", "16-mixed"}


def test_16_mixed_is_refused_on_the_cpu_with_the_fix():
    fix = r"needs a CUDA GPU, got device 'cpu'; use precision 'bf16-mixed' on the CPU"
    with pytest.raises(MlmmError, match=fix):
        Trainer(precision="16-mixed")
    if not torch.cuda.is_available():  # "auto" resolves to the CPU: refused when fit starts
        with pytest.raises(MlmmError, match=fix):
            trainer(precision="16-mixed", device="auto").fit(model(), data(30, 0))


def test_bf16_mixed_on_a_gpu_without_bfloat16_is_one_line(monkeypatch):
    """A GPU without bfloat16: torch's autocast raised a RuntimeError inside the first step."""
    from mlmm.train.trainer import check_precision_device

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(MlmmError) as err:
        check_precision_device("bf16-mixed", torch.device("cuda:0"))
    assert "\n" not in str(err.value)
    assert "needs bfloat16, which the GPU of device 'cuda:0' does not support" in str(err.value)
    assert "use precision '16-mixed' on this GPU, or '32'" in str(err.value)
    check_precision_device("16-mixed", torch.device("cuda:0"))  # float16 is the fix
    check_precision_device("bf16-mixed", torch.device("cpu"))  # the CPU has bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    check_precision_device("bf16-mixed", torch.device("cuda:0"))


def test_a_model_predicts_in_float32_where_the_device_lacks_its_precision(monkeypatch):
    """A bf16-mixed model moved to a GPU without bfloat16 autocast there and failed in torch;
    it predicts in float32 (its weights are float32), as a 16-mixed model on the CPU does."""
    from mlmm.train.trainer import prediction_precision

    cuda, cpu = torch.device("cuda:0"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert prediction_precision("bf16-mixed", cuda) == "32"
    assert prediction_precision("16-mixed", cpu) == "32"
    assert prediction_precision("16-mixed", cuda) == "16-mixed"
    assert prediction_precision("bf16-mixed", cpu) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prediction_precision("bf16-mixed", cuda) == "bf16-mixed"
    # the predict path asks it: a bf16-mixed model on such a device predicts as a float32 one
    import mlmm.train.trained as trained_module

    train, test = data(60, 0), data(30, 1)
    trained = trainer(precision="bf16-mixed", max_epochs=2).fit(model(), train)
    asked = []
    monkeypatch.setattr(
        trained_module, "prediction_precision", lambda p, d: asked.append(p) or "32"
    )
    as_float32 = trained.predict_proba(test)
    assert asked == ["bf16-mixed"]
    np.testing.assert_array_equal(as_float32, trained.to("cpu", precision="32").predict_proba(test))


def test_the_16_mixed_loop_scales_the_loss_and_unscales_before_clipping(monkeypatch):
    # 16-mixed is refused off CUDA; with that check lifted, this torch runs float16 autocast on
    # the CPU, so the gradient-scaler path of the loop is exercised without a GPU
    import mlmm.train.trainer as trainer_module

    calls = []

    class SpyScaler(torch.amp.GradScaler):
        def __init__(self, device, enabled):
            calls.append(("init", enabled))
            super().__init__(device, enabled=enabled)

        def unscale_(self, optimizer):
            calls.append("unscale")
            return super().unscale_(optimizer)

    monkeypatch.setattr(trainer_module, "check_precision_device", lambda precision, device: None)
    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    train, val, test = data(300, 0), data(90, 1), data(150, 2)
    net = model("late-fusion")
    probe = DtypeProbe(net)
    trained = trainer(precision="16-mixed", max_epochs=5).fit(net, train, val)
    assert ("init", True) in calls and "unscale" in calls
    assert (True, torch.float16) in probe.seen
    assert (trained.predict(test) == test.targets).mean() > 0.6
    probe.seen.clear()
    trained.predict(test)
    assert probe.seen == {(False, torch.float32)}  # float16 autocast is for CUDA only


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_machine_is_one_line():
    with pytest.raises(MlmmError, match="no CUDA GPU is available; use --device cpu") as err:
        trainer(device="cuda").fit(model(), data(30, 0))
    assert "\n" not in str(err.value)


def test_a_method_fitting_outside_the_loop_runs_in_float32_and_says_so():
    train, val, test = data(120, 0), data(45, 1), data(45, 2)
    with pytest.warns(UserWarning, match="lda-em trains outside the shared loop"):
        trained = trainer(precision="bf16-mixed").fit(model("lda-em"), train, val)
    assert trained.precision == "32"  # the effective precision, recorded by the benchmark
    assert trained.trainer_config["precision"] == "bf16-mixed"  # what was asked
    probe = DtypeProbe(trained.model)
    assert np.isfinite(trained.predict_proba(test)).all()
    assert (False, torch.bfloat16) not in probe.seen


def test_auto_refuses_a_mixed_precision_in_one_line():
    X, y = dict(data(60, 0).inputs), data(60, 0).targets
    auto = mlmm.MissingModalityClassifier(method="auto", precision="bf16-mixed")
    with pytest.raises(MlmmError, match="method 'auto' trains in float32"):
        auto.fit(X, y)
    with pytest.raises(MlmmError, match="method 'auto' trains in float32"):
        mlmm.run_experiment(data(60, 0), "auto", trainer={"precision": "bf16-mixed"})
