"""ONNX export: onnxruntime answers as PyTorch on every presence pattern, or a one-line refusal."""

import itertools
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="needs the export extra")

import mlmm  # noqa: E402
from mlmm import cli  # noqa: E402
from mlmm.errors import MlmmError  # noqa: E402
from mlmm.serve.export import export_onnx, onnx_session  # noqa: E402
from mlmm.train import TrainedModel, Trainer  # noqa: E402


@pytest.mark.parametrize("fixture", ["hemis_run", "late_fusion_run"])
def test_onnxruntime_matches_pytorch_on_every_presence_pattern(fixture, request, tmp_path):
    trained = TrainedModel.load(request.getfixturevalue(fixture))
    out = tmp_path / "model.onnx"
    report = export_onnx(trained, out)
    assert report["max_abs_diff"] <= 1e-5 and report["patterns"] == 7
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == ["m0", "m1", "m2", "present"]
    rng = np.random.default_rng(5)
    for pattern in itertools.product((False, True), repeat=3):
        if not any(pattern):
            continue
        for n in (1, 5):  # one sample and a batch
            raw = {m: rng.normal(size=(n, 16)).astype(np.float32) for m in ("m0", "m1", "m2")}
            present = np.tile(np.array(pattern), (n, 1))
            given = {m: np.where(present[:, [j]], raw[m], np.nan) for j, m in enumerate(raw)}
            expected = trained.predict_proba(given)  # the Python predict path, NaN = absent
            got = session.run(["probabilities"], {**raw, "present": present})[0]
            np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "params"),
    [  # each was refused: what the traced graph held only fit the check batch or no batch
        ("late-fusion", {"rule": "mean_prob"}),  # log() of an integer count: Log on int64
        ("masked-attention", {}),  # the class token expanded to len(tokens): a constant
        ("missing-aware-prompts", {}),
        ("frozen-backbone-prompting", {}),
        ("masked-reconstruction", {"pooling": "cls"}),
    ],
)
def test_methods_that_trace_export(method, params, tmp_path):
    data = mlmm.load_dataset("synthetic", n_samples=120)
    model = mlmm.create_method(method, data.specs, data.task, **params)
    trained = Trainer(max_epochs=1, progress=False).fit(model, data)
    report = export_onnx(trained, tmp_path / "model.onnx")
    assert report["max_abs_diff"] <= 1e-5 and report["patterns"] == 7


@pytest.mark.parametrize("method", ["knn-impute", "per-subset", "retrieval-prompts"])
def test_methods_that_cannot_be_traced_are_refused_in_one_line(method, tmp_path, capfd):
    data = mlmm.load_dataset("synthetic", n_samples=120)
    model = mlmm.create_method(method, data.specs, data.task)
    trained = Trainer(max_epochs=1, progress=False).fit(model, data)
    out = tmp_path / "model.onnx"
    capfd.readouterr()
    with pytest.raises(MlmmError, match=f"the '{method}' method cannot be exported") as err:
        export_onnx(trained, out)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert not out.exists()
    # was: onnxruntime's own log of a failing check run, in colour, before the one line
    assert "onnxruntime" not in capfd.readouterr().err


def test_export_model_command(hemis_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(sys, "argv", ["mlmm", "export-model", str(hemis_run), "--out", str(out)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code in (0, None), capsys.readouterr().err
    assert out.stat().st_size > 0 and "7 presence patterns" in capsys.readouterr().out
    monkeypatch.setattr(
        sys, "argv", ["mlmm", "export-model", str(hemis_run), "--out", str(out), "--format", "tf"]
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "--format must be onnx" in capsys.readouterr().err


def test_a_regression_model_exports_its_values(tmp_path):
    from mlmm.testing import contract_dataset

    data = contract_dataset(task="regression")
    trained = Trainer(max_epochs=2, progress=False).fit(
        mlmm.create_method("late-fusion", data.specs, data.task), data
    )
    export_onnx(trained, tmp_path / "r.onnx")
    session = onnx_session(tmp_path / "r.onnx")
    present = data.observed[:8]
    feed = {m: data.inputs[m][:8].astype(np.float32) for m in data.modality_names}
    got = session.run(["prediction"], {**feed, "present": present})[0]
    np.testing.assert_allclose(
        got, trained.predict(data.subset(np.arange(8))), rtol=1e-4, atol=1e-5
    )


def test_export_model_refuses_to_write_over_the_models_own_files(hemis_run, monkeypatch, capsys):
    weights = hemis_run / "model.safetensors"
    before = weights.read_bytes()
    monkeypatch.setattr(
        sys, "argv", ["mlmm", "export-model", str(hemis_run), "--out", str(weights)]
    )
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2 and "is the file it is made from" in capsys.readouterr().err
    assert weights.read_bytes() == before
    TrainedModel.load(hemis_run)  # still loads


def _variable_length_model(method, gru=False):
    from dataclasses import replace

    from mlmm.nn.encoders import SequenceEncoder
    from mlmm.testing import contract_dataset

    data = contract_dataset(n_samples=40)
    data = replace(data, lengths={"s": np.random.default_rng(0).integers(1, 13, size=40)})
    model = mlmm.create_method(method, data.specs, data.task, hidden=8)
    if gru:  # no registered method picks the GRU; a plugin's build_encoder(...) may
        (owner,) = [m for m in model.modules() if "s" in getattr(m, "_modules", {})]
        owner["s"] = SequenceEncoder(2, owner["s"].out[-1].out_features, 16, 2, 0.0, "gru")
    return Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)


@pytest.mark.parametrize(
    "method, gru", [("zero-impute", False), ("hemis", False), ("zero-impute", True)]
)
def test_a_variable_length_model_exports_with_a_lengths_input(method, gru, tmp_path):
    trained = _variable_length_model(method, gru)
    report = export_onnx(trained, tmp_path / "v.onnx")
    assert report["max_abs_diff"] <= 1e-5
    session = onnx_session(tmp_path / "v.onnx")
    assert [i.name for i in session.get_inputs()] == ["a", "b", "s", "present", "lengths.s"]
    rng = np.random.default_rng(3)
    n = 9
    raw = {"a": rng.normal(size=(n, 6)), "b": rng.normal(size=(n, 4))}
    raw["s"] = rng.normal(size=(n, 12, 2))
    present = np.ones((n, 3), dtype=bool)
    present[[2, 5], 2] = False  # "s" absent
    present[[1, 4], 0] = False  # "a" absent
    steps = np.array([1, 12, 0, 3, 7, 0, 12, 5, 2])  # mixed lengths, 0 where absent
    padded = np.arange(12)[None, :] >= steps[:, None]  # [N, T]
    given = {
        m: np.where(present[:, j].reshape(-1, *[1] * (x.ndim - 1)), x, np.nan)
        for j, (m, x) in enumerate(raw.items())
    }
    given["s"][padded & present[:, [2]]] = np.nan  # NaN padding, as a file may hold it
    expected = trained.predict_proba(given, lengths={"s": steps})  # the Python predict path
    feed = {m: x.astype(np.float32) for m, x in raw.items()}
    feed["s"][padded] = 1e3  # the graph must not read the padding, whatever it holds
    feed |= {"present": present, "lengths.s": steps.astype(np.int64)}
    got = session.run(["probabilities"], feed)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    nan = {**feed, "s": np.where(padded[..., None], np.float32(np.nan), feed["s"])}
    np.testing.assert_allclose(session.run(["probabilities"], nan)[0], expected, atol=1e-5)
    one = session.run(["probabilities"], {k: v[3:4] for k, v in feed.items()})[0]
    np.testing.assert_allclose(one, expected[3:4], atol=1e-5)
    # the lengths are read: every row at 12 steps answers otherwise
    full = session.run(["probabilities"], {**feed, "lengths.s": np.where(steps, 12, 0)})[0]
    assert not np.allclose(full, expected, atol=1e-3)
    # unchecked lengths, as docs/deploy.md says: over the maximum reads as the maximum; 0 or
    # below on a present row reads no step, which is not the answer for an absent sequence
    over = session.run(["probabilities"], {**feed, "lengths.s": np.where(steps, 99, 0)})[0]
    np.testing.assert_array_equal(over, full)
    none = session.run(["probabilities"], {**feed, "lengths.s": np.zeros(n, dtype=np.int64)})[0]
    below = session.run(["probabilities"], {**feed, "lengths.s": np.full(n, -4, dtype=np.int64)})
    np.testing.assert_array_equal(below[0], none)
    absent = session.run(["probabilities"], {**feed, "present": present & [True, True, False]})
    assert not np.allclose(absent[0][[0, 3]], none[[0, 3]], atol=1e-5)


def test_each_variable_length_sequence_has_its_own_lengths_input(two_sequences, tmp_path):
    trained, data = two_sequences
    export_onnx(trained, tmp_path / "two.onnx")
    session = onnx_session(tmp_path / "two.onnx")
    names = ["a", "s", "u", "present", "lengths.s", "lengths.u"]
    assert [i.name for i in session.get_inputs()] == names
    feed = {m: x.astype(np.float32) for m, x in data.inputs.items()}
    feed |= {"present": data.observed}
    feed |= {f"lengths.{m}": steps.astype(np.int64) for m, steps in data.lengths.items()}
    got = session.run(["probabilities"], feed)[0]
    np.testing.assert_allclose(got, trained.predict_proba(data), atol=1e-5)


def test_the_export_check_reads_every_sequence_at_one_step_and_at_its_maximum(two_sequences):
    from mlmm.serve.export import check_inputs

    trained, _ = two_sequences
    arrays, present = check_inputs(trained)
    for j, name in [(1, "s"), (2, "u")]:
        steps = arrays[f"lengths.{name}"]
        assert (steps[~present[:, j]] == 0).all()
        assert {1, trained.modality_shapes[name][0]} <= set(steps[present[:, j]].tolist())


@pytest.mark.parametrize("gru", [False, True], ids=["conv", "gru"])
def test_the_batch_and_time_axes_are_dynamic(gru, tmp_path):
    """A batch of another size, padded to its longest row or past the maximum, answers as
    the Python predict path on the same samples padded to the maximum."""
    trained = _variable_length_model("zero-impute", gru)
    export_onnx(trained, tmp_path / "v.onnx")
    session = onnx_session(tmp_path / "v.onnx")
    rng = np.random.default_rng(4)
    n = 5
    raw = {"a": rng.normal(size=(n, 6)), "b": rng.normal(size=(n, 4))}
    raw["s"] = rng.normal(size=(n, 12, 2))
    present = np.ones((n, 3), dtype=bool)
    present[3, 2] = False  # "s" absent in one sample
    steps = np.array([1, 7, 2, 0, 5])  # the longest row: 7 of 12 steps
    padded = np.arange(12)[None, :] >= steps[:, None]  # [N, T]
    given = {k: v.copy() for k, v in raw.items()}
    given["s"][padded] = np.nan
    expected = trained.predict_proba(given, lengths={"s": steps})
    feed = {m: x.astype(np.float32) for m, x in raw.items()}
    feed |= {"present": present, "lengths.s": steps.astype(np.int64)}
    for length in (7, 9, 15):  # the longest row, some padding, past the maximum of 12
        s = np.concatenate([feed["s"], rng.normal(size=(n, 3, 2)).astype(np.float32)], axis=1)
        got = session.run(["probabilities"], {**feed, "s": s[:, :length]})[0]
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=f"padded to {length}")


def test_a_gru_traced_through_packed_sequences_is_refused_not_written(tmp_path, monkeypatch):
    """Were the GRU traced through its packed path (as before gru_last_valid), the export
    would stop in one line, never write a graph that ignores the lengths."""
    import mlmm.nn.encoders as encoders

    trained = _variable_length_model("zero-impute", gru=True)
    monkeypatch.setattr(encoders, "_tracing", lambda: False)
    with pytest.raises(MlmmError, match="'zero-impute' method cannot be exported") as err:
        export_onnx(trained, tmp_path / "v.onnx")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "v.onnx").exists()


@pytest.mark.parametrize("wrong", ["whole-rows", "backward-from-the-end"])
def test_the_export_check_catches_a_gru_path_that_reads_padding(wrong, tmp_path, monkeypatch):
    """The check's lengths (1, the maximum, random between; drawn values in the padding) find
    a traced GRU that reads the padding: whole rows, or only its backward direction started at
    the padded end (the mistake gru_last_valid's index gather exists to avoid)."""
    import torch

    import mlmm.nn.encoders as encoders

    right = encoders.gru_last_valid

    def whole_rows(gru, x, lengths):  # [layers * 2, B, H]
        return gru(x)[1]

    def backward_from_the_end(gru, x, lengths):  # the forward state right, the backward not
        return torch.stack([right(gru, x, lengths)[0], gru(x)[1][1]])

    trained = _variable_length_model("zero-impute", gru=True)
    chosen = whole_rows if wrong == "whole-rows" else backward_from_the_end
    monkeypatch.setattr(encoders, "gru_last_valid", chosen)
    with pytest.raises(MlmmError, match="its traced graph differs from PyTorch by"):
        export_onnx(trained, tmp_path / "v.onnx")
    assert not (tmp_path / "v.onnx").exists()


def test_a_multilabel_model_exports_its_label_probabilities(tmp_path):
    from mlmm.testing import contract_dataset

    data = contract_dataset(task="multilabel")
    trained = Trainer(max_epochs=2, progress=False).fit(
        mlmm.create_method("late-fusion", data.specs, data.task), data
    )
    export_onnx(trained, tmp_path / "m.onnx")
    present = data.observed[:8].copy()
    present[0] = False  # a sample with nothing: the training label frequencies
    feed = {m: data.inputs[m][:8].astype(np.float32) for m in data.modality_names}
    got = onnx_session(tmp_path / "m.onnx").run(["probabilities"], {**feed, "present": present})[0]
    rows = {
        m: np.where(present[:, j].reshape(-1, *[1] * (feed[m].ndim - 1)), feed[m], np.nan)
        for j, m in enumerate(data.modality_names)
    }
    want = trained.predict_proba(rows, on_empty="prior")
    assert got.shape == (8, data.task.n_labels)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[0], trained.prior, atol=1e-6)


def test_export_model_never_overwrites_a_file_that_is_not_onnx(
    hemis_run, tmp_path, monkeypatch, capsys
):
    """`mlmm export-model RUN --out notes.txt` replaced any existing file with the model."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    monkeypatch.setattr(sys, "argv", ["mlmm", "export-model", str(hemis_run), "--out", str(notes)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "exists and is not a ONNX file, so it is not replaced" in err
    assert notes.read_text() == "my notes"
    out = tmp_path / "m.onnx"  # an earlier export is replaced
    for _ in range(2):
        monkeypatch.setattr(
            sys, "argv", ["mlmm", "export-model", str(hemis_run), "--out", str(out)]
        )
        with pytest.raises(SystemExit) as exc:
            cli.main()
        assert exc.value.code in (0, None), capsys.readouterr().err


def _variable_length(data):
    from dataclasses import replace

    steps = np.random.default_rng(0).integers(3, 13, size=data.n_samples)
    return replace(data, lengths={"s": steps})


@pytest.mark.parametrize(
    ("method", "params", "task", "variable"),
    [  # each was refused: per-modality-logistic traced where(mask, x, True), lda-em Cholesky
        ("per-modality-logistic", {}, "classification", False),
        ("per-modality-logistic", {}, "classification", True),
        ("lda-em", {"shrinkage": 0.5}, "classification", False),
        ("lda-em", {"shrinkage": 0.5}, "classification", True),
        ("lda-em", {}, "regression", False),
        # one RBF width per view (as gamma_grid chooses them): the graph must use each one
        (
            "per-modality-kernel",
            {"gamma": {"a": 0.05, "b": 0.5, "s": 5.0}},
            "classification",
            False,
        ),
        ("per-modality-kernel", {"gamma": {"a": 0.05, "b": 0.5, "s": 5.0}}, "regression", True),
    ],
)
def test_classical_references_export_and_answer_as_pytorch_on_every_pattern(
    method, params, task, variable, tmp_path
):
    from dataclasses import replace

    from mlmm.testing import contract_dataset

    full = contract_dataset(n_samples=90, task=task)
    assert full.modality_names[2] == "s"  # the sequence modality
    rng = np.random.default_rng(2)  # weaker signal, so that answers are not all 0 and 1
    full = replace(
        full, inputs={k: 0.2 * v + rng.normal(size=v.shape) for k, v in full.inputs.items()}
    )
    if variable:
        full = _variable_length(full)
    present = np.random.default_rng(1).random(full.observed.shape) > 0.3
    present[np.arange(90), np.arange(90) % 3] = True  # one modality at least
    data = full.with_presence(present)  # EM then has hidden entries to fill
    model = mlmm.create_method(method, data.specs, data.task, **params)
    trained = Trainer(progress=False).fit(model, data)
    report = export_onnx(trained, tmp_path / "model.onnx")
    assert report["max_abs_diff"] <= 1e-5 and report["patterns"] == 7
    session = onnx_session(tmp_path / "model.onnx")
    rng = np.random.default_rng(3)
    output = "probabilities" if task == "classification" else "prediction"
    for pattern in itertools.product((False, True), repeat=3):
        if not any(pattern):
            continue
        rows = rng.choice(full.n_samples, 6, replace=False)
        part = full.subset(rows).with_presence(np.tile(np.array(pattern), (6, 1)))
        feed = {m: part.inputs[m].astype(np.float32) for m in part.modality_names}
        feed["present"] = part.observed
        if variable:
            feed["lengths.s"] = part.lengths["s"].astype(np.int64)
        got = session.run([output], feed)[0]
        expected = trained.predict_raw(part)  # PyTorch, the Python predict path
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        if task == "classification":  # answers that are not all 0 and 1: the check can fail
            assert np.median(expected.max(1)) < 0.999


def test_an_lda_em_table_too_large_for_onnx_is_refused_in_one_line(tmp_path, monkeypatch):
    from mlmm.methods.reference import lda_em
    from mlmm.testing import contract_dataset

    data = contract_dataset(n_samples=60)
    trained = Trainer(progress=False).fit(mlmm.create_method("lda-em", data.specs, data.task), data)
    monkeypatch.setattr(lda_em, "MAX_ONNX_TABLE_BYTES", 1000)
    k = data.task.output_dim
    with pytest.raises(
        MlmmError, match=rf"per presence pattern, 8 patterns x \d+ features x {k} outputs in float"
    ):
        export_onnx(trained, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_an_lda_em_export_solves_each_presence_pattern_once(tmp_path, monkeypatch):
    """The check's PyTorch pass and the exported table share the model's pattern maps: one
    Cholesky per pattern (about a second each at 4,000 features), not two."""
    from mlmm.methods.reference.lda_em import LdaEm
    from mlmm.testing import contract_dataset

    data = contract_dataset(n_samples=60)
    trained = Trainer(progress=False).fit(mlmm.create_method("lda-em", data.specs, data.task), data)
    solved = []
    original = LdaEm._linear_map
    monkeypatch.setattr(LdaEm, "_linear_map", lambda self, o: solved.append(1) or original(self, o))
    export_onnx(trained, tmp_path / "model.onnx")
    assert len(solved) == 2**data.n_modalities  # the empty pattern too


def test_a_per_modality_kernel_with_a_gamma_grid_exports_each_views_chosen_width(tmp_path):
    from mlmm.data.dataset import MultimodalDataset
    from mlmm.data.specs import ModalitySpec, TaskSpec

    rng = np.random.default_rng(0)
    t = rng.uniform(-3, 3, size=200)
    y = (np.sin(3 * t) > 0).astype(np.int64)  # view a: the class flips along t (narrow wins)
    b = rng.normal(size=(200, 2))
    b[:, 0] += 1.5 * (2 * y - 1)  # view b: a linear signal (wide wins)
    observed = rng.random((200, 2)) > 0.3
    observed[np.arange(200), np.arange(200) % 2] = True
    data = MultimodalDataset(
        specs=[ModalitySpec("a", "vector", (1,)), ModalitySpec("b", "vector", (2,))],
        task=TaskSpec("classification", 2),
        inputs={"a": t[:, None], "b": b},
        targets=y,
        observed=observed,
    )
    model = mlmm.create_method(
        "per-modality-kernel",
        data.specs,
        data.task,
        C="cv",
        gamma_grid=[0.05, 5.0],
        n_components=60,
    )
    trained = Trainer(progress=False).fit(model, data)
    assert len(set(model.view_gamma.values())) == 2  # the views differ: one width would not do
    export_onnx(trained, tmp_path / "model.onnx")
    feed = {m: data.inputs[m].astype(np.float32) for m in data.modality_names}
    got = onnx_session(tmp_path / "model.onnx").run(
        ["probabilities"], {**feed, "present": data.observed}
    )[0]
    np.testing.assert_allclose(got, trained.predict_proba(data), rtol=0, atol=1e-5)
    model.view_gamma = dict.fromkeys(model.view_gamma, 0.5)  # as a graph of one width answers
    assert np.abs(got - trained.predict_proba(data)).max() > 1e-2


def _flex_moe():
    data = mlmm.load_dataset("synthetic", n_samples=120)
    model = mlmm.create_method("flex-moe", data.specs, data.task, embed_dim=16, hidden=32)
    return Trainer(max_epochs=1, progress=False, seed=0).fit(model, data)


def test_a_flex_moe_graph_answers_any_input_at_any_batch_size(tmp_path):
    """Was: the traced graph kept only the experts its check inputs had selected (other
    inputs answered up to 0.016 off in probability) and froze the check's batch size in the
    router (a batch of more than 22 samples failed in onnxruntime: GatherND, invalid index)."""
    trained = _flex_moe()
    export_onnx(trained, tmp_path / "model.onnx")
    session = onnx_session(tmp_path / "model.onnx")
    rng = np.random.default_rng(7)
    for n in (1, 23, 200):
        raw = {m: rng.normal(size=(n, 16)).astype(np.float32) for m in ("m0", "m1", "m2")}
        present = rng.random((n, 3)) < 0.6
        present[~present.any(axis=1), 0] = True
        given = {m: np.where(present[:, [j]], raw[m], np.nan) for j, m in enumerate(raw)}
        got = session.run(["probabilities"], {**raw, "present": present})[0]
        np.testing.assert_allclose(got, trained.predict_proba(given), atol=1e-5)


def test_the_export_check_catches_a_choice_the_trace_froze(tmp_path, monkeypatch):
    """A graph right in every shape but wrong in value on inputs other than those traced
    (flex-moe's sparse expert loop, traced as it is) is refused, not written."""
    from mlmm.methods.architecture.flex_moe import FlexMoE

    trained = _flex_moe()
    monkeypatch.setattr(FlexMoE, "onnx_module", lambda self: self)  # the sparse loop
    with pytest.raises(MlmmError, match="its traced graph differs from PyTorch by") as err:
        export_onnx(trained, tmp_path / "model.onnx")
    assert "\n" not in str(err.value) and not (tmp_path / "model.onnx").exists()


def test_an_auto_ensemble_exports_through_its_members_onnx_modules(tmp_path):
    """Was refused: its flex-moe member traced sparse (0.0096 off), its lda-em member's
    Cholesky path (onnxruntime has no Unique): each member's onnx_module() is traced now."""
    data = mlmm.load_dataset("synthetic", n_samples=120)
    members = [
        {"method": "flex-moe", "params": {"embed_dim": 16, "hidden": 32}},
        {"method": "lda-em"},
    ]
    model = mlmm.create_method("auto-ensemble", data.specs, data.task, members=members)
    trained = Trainer(max_epochs=1, progress=False, seed=0).fit(model, data)
    export_onnx(trained, tmp_path / "model.onnx")
    session = onnx_session(tmp_path / "model.onnx")
    rng = np.random.default_rng(3)
    raw = {m: rng.normal(size=(100, 16)).astype(np.float32) for m in ("m0", "m1", "m2")}
    present = rng.random((100, 3)) < 0.6
    present[~present.any(axis=1), 1] = True
    given = {m: np.where(present[:, [j]], raw[m], np.nan) for j, m in enumerate(raw)}
    got = session.run(["probabilities"], {**raw, "present": present})[0]
    np.testing.assert_allclose(got, trained.predict_proba(given), atol=1e-5)
    assert not trained.model.models["m0"].blocks[0].moe.dense  # the model itself unchanged
