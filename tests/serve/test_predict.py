"""`mlmm predict`: files in, one row per sample out, with the score of its presence pattern."""

import sys

import numpy as np
import pandas as pd
import pytest

from mlmm import cli
from mlmm.errors import MlmmError
from mlmm.serve.predict import predict_table
from mlmm.train import TrainedModel


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _samples(n=6, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {f"m{j}": rng.normal(size=(n, 16)) for j in range(3)}
    arrays["m1"][:3] = np.nan  # m1 absent in the first three samples
    return arrays


def test_table_has_prediction_probabilities_pattern_and_its_validation_score(hemis_run):
    trained = TrainedModel.load(hemis_run)
    table = predict_table(trained, _samples())
    proba = table[[f"proba_{k}" for k in range(4)]].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(table["prediction"], proba.argmax(axis=1))
    assert table["modalities"].tolist() == ["m0+m2"] * 3 + ["m0+m1+m2"] * 3
    scores = trained.validation_scores()
    assert table["validation_accuracy"].iloc[0] == scores["m0+m2"]["accuracy"]
    assert table["validation_accuracy"].iloc[5] == scores["m0+m1+m2"]["accuracy"]


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_predict_command_reads_and_writes_each_format(
    hemis_run, tmp_path, monkeypatch, capsys, suffix
):
    trained = TrainedModel.load(hemis_run)
    samples = _samples()
    expected = predict_table(trained, samples)
    source = tmp_path / f"in{suffix}"
    if suffix == ".npz":
        np.savez(source, **samples)
    else:
        frame = _frame(trained, samples)
        frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    target = tmp_path / f"out{suffix}"
    code, out, err = run(
        monkeypatch,
        capsys,
        "predict",
        str(hemis_run),
        "--input",
        str(source),
        "--output",
        str(target),
    )
    assert code == 0, err
    if suffix == ".npz":
        with np.load(target, allow_pickle=False) as data:
            got = pd.DataFrame({k: data[k] for k in data.files})
    else:
        got = pd.read_csv(target) if suffix == ".csv" else pd.read_parquet(target)
    assert got["modalities"].tolist() == expected["modalities"].tolist()
    np.testing.assert_allclose(got["proba_0"], expected["proba_0"], atol=1e-6)


def test_predict_prints_csv_without_output(hemis_run, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.npz"
    np.savez(source, m0=np.zeros((2, 16)))
    code, out, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 0, err
    assert out.splitlines()[0].startswith("prediction,proba_0")
    assert out.splitlines()[1].split(",")[-2] == "m0"


def test_columns_that_do_not_match_are_named_in_one_line(hemis_run, tmp_path, monkeypatch, capsys):
    source = tmp_path / "in.csv"
    pd.DataFrame({"m0.0": [1.0], "age": [3.0]}).to_csv(source, index=False)
    code, out, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2
    assert err.count("\n") == 1
    assert "missing 15 column(s) ('m0.1'" in err and "extra 1 column(s) ('age')" in err


def test_predict_refuses_a_bad_output_suffix_before_loading(tmp_path, monkeypatch, capsys):
    code, _, err = run(
        monkeypatch, capsys, "predict", str(tmp_path), "--input", "x.npz", "--output", "o.txt"
    )
    assert code == 2 and "--output 'o.txt' has suffix '.txt'" in err


@pytest.mark.parametrize("suffix", [".npz", ".csv"])
def test_predict_refuses_to_write_over_its_input(hemis_run, tmp_path, monkeypatch, capsys, suffix):
    source = tmp_path / f"in{suffix}"
    if suffix == ".npz":
        np.savez(source, m0=np.zeros((2, 16)))
    else:
        pd.DataFrame({f"m0.{j}": [0.0, 1.0] for j in range(16)}).to_csv(source, index=False)
    before = source.read_bytes()
    code, _, err = run(
        monkeypatch,
        capsys,
        "predict",
        str(hemis_run),
        "--input",
        str(source),
        "--output",
        str(source),
    )
    assert code == 2 and "is the file it is made from" in err
    assert source.read_bytes() == before


def test_predict_refuses_an_existing_output_of_another_kind(
    hemis_run, tmp_path, monkeypatch, capsys
):
    source = tmp_path / "in.npz"
    np.savez(source, m0=np.zeros((2, 16)))
    target = tmp_path / "out.csv"
    target.write_bytes(b"\x00\x01binary")  # not a CSV: not an earlier run's output
    code, _, err = run(
        monkeypatch,
        capsys,
        "predict",
        str(hemis_run),
        "--input",
        str(source),
        "--output",
        str(target),
    )
    assert code == 2 and "is not a CSV file" in err
    assert target.read_bytes() == b"\x00\x01binary"


# ---------------------------------------------------------------- variable-length sequences
@pytest.fixture(scope="module")
def variable_run(tmp_path_factory):
    """A model trained on variable-length "s" ([12, 2]), its data and its artifact."""
    from dataclasses import replace

    import mlmm
    from mlmm.testing import contract_dataset

    data = contract_dataset(n_samples=40)
    steps = np.random.default_rng(0).integers(1, 13, size=40)
    absent = np.arange(40) % 7 == 0
    steps[absent] = 0  # "s" absent in these rows
    observed = data.observed & ~(absent[:, None] & [False, False, True])
    data = replace(data.with_presence(observed), lengths={"s": steps})
    model = mlmm.create_method("zero-impute", data.specs, data.task, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)
    path = tmp_path_factory.mktemp("variable") / "run"
    trained.save(path)
    return path, data


def _variable_samples(data):
    """The data as a file holds it: NaN padding after each row's steps, NaN absent rows."""
    arrays = {k: v.astype(np.float64) for k, v in data.inputs.items()}
    for j, name in enumerate(data.modality_names):
        arrays[name][~data.observed[:, j]] = np.nan
    padded = np.arange(12)[None, :] >= data.lengths["s"][:, None]  # [N, T]
    arrays["s"][padded] = np.nan
    return arrays


@pytest.mark.parametrize("suffix", [".npz", ".csv", ".parquet"])
def test_predict_files_carry_the_lengths_of_variable_length_sequences(
    variable_run, tmp_path, monkeypatch, capsys, suffix
):
    path, data = variable_run
    trained = TrainedModel.load(path)
    expected = trained.predict_proba(data)  # the dataset with its lengths
    arrays = _variable_samples(data)
    source = tmp_path / f"in{suffix}"
    if suffix == ".npz":
        np.savez(source, **arrays, **{"lengths.s": data.lengths["s"]})
    else:
        columns = trained.table_columns
        frame = pd.DataFrame(
            {
                c: arrays[m].reshape(len(data), -1)[:, j]
                for m, cols in columns.items()
                for j, c in enumerate(cols)
            }
        )
        lengths = data.lengths["s"].astype(float)
        lengths[lengths == 0] = np.nan  # a blank cell where "s" is absent
        frame["lengths.s"] = lengths
        frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    target = tmp_path / "out.csv"
    code, _, err = run(
        monkeypatch, capsys, "predict", str(path), "--input", str(source), "--output", str(target)
    )
    assert code == 0, err
    got = pd.read_csv(target)[["proba_0", "proba_1", "proba_2"]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    # the lengths are read: the same file with every row at 12 steps answers otherwise
    present = data.lengths["s"] > 0
    padded = {**arrays, "s": arrays["s"].copy()}
    padded["s"][present] = np.nan_to_num(padded["s"][present])  # zeros read as 12 steps
    full = predict_table(trained, {**padded, "lengths.s": np.where(present, 12, 0)})
    assert not np.allclose(full[["proba_0", "proba_1", "proba_2"]].to_numpy(), expected)


@pytest.mark.parametrize(
    ("entries", "phrase"),
    [
        (
            {},
            "holds the variable-length sequence 's' but not its lengths; add an array 'lengths.s'",
        ),
        ({"lengths.a": np.ones(40)}, "reads lengths only for its variable-length sequences ['s']"),
        ({"lengths.s": np.zeros(40)}, "'lengths.s' is 0 or empty in 34 row(s) where 's' is"),
        ({"lengths.s": np.full(40, 13)}, "'lengths.s' must hold whole numbers from 0 to 12"),
        ({"lengths.s": np.full(40, -1)}, "got [-1.0, -1.0, -1.0] in 40 row(s) (first: [0, 1,"),
        ({"lengths.s": np.full(40, 2.5)}, "'lengths.s' must hold whole numbers from 0 to 12"),
        ({"lengths.s": np.full(40, "x")}, "'lengths.s' holds text, e.g. 'x' in row 0; write"),
        (  # numbers as text would convert: refused all the same
            {"lengths.s": np.full(40, "3")},
            "'lengths.s' holds text, e.g. '3' in row 0; write each row's valid steps of 's' as in",
        ),
        ({"lengths.s": np.ones(40, bool)}, "'lengths.s' holds booleans (dtype bool), read as 1/0"),
        (  # one value, not one per row: no row to name
            {"lengths.s": np.array("3")},
            "'lengths.s' holds text, e.g. '3'; write each row's valid steps of 's' as integers",
        ),
    ],
)
def test_variable_length_files_without_usable_lengths_stop_in_one_line(
    variable_run, tmp_path, monkeypatch, capsys, entries, phrase
):
    path, data = variable_run
    source = tmp_path / "in.npz"
    np.savez(source, **_variable_samples(data), **entries)
    code, _, err = run(monkeypatch, capsys, "predict", str(path), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert phrase in " ".join(err.split()), err


def test_lengths_in_the_file_of_a_full_length_model_are_refused(
    hemis_run, tmp_path, monkeypatch, capsys
):
    source = tmp_path / "in.csv"
    frame = pd.DataFrame({f"m0.{j}": [0.0, 1.0] for j in range(16)})
    frame["lengths.m0"] = [1, 2]
    frame.to_csv(source, index=False)
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert "trained on full-length sequences and reads no lengths; drop a column" in err


def test_lengths_of_a_sequence_the_file_leaves_out_read_nothing(
    variable_run, tmp_path, monkeypatch, capsys
):
    path, data = variable_run
    arrays = {k: v for k, v in _variable_samples(data).items() if k != "s"}  # "s" absent
    source = tmp_path / "in.npz"
    np.savez(source, **arrays, **{"lengths.s": data.lengths["s"]})
    target = tmp_path / "out.csv"
    code, _, err = run(
        monkeypatch, capsys, "predict", str(path), "--input", str(source), "--output", str(target)
    )
    assert code == 0, err
    expected = TrainedModel.load(path).predict_proba(arrays)  # no sequence, no lengths
    got = pd.read_csv(target)[["proba_0", "proba_1", "proba_2"]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_a_table_with_two_sequences_and_blank_padding_predicts_as_the_dataset(
    two_sequences, tmp_path, monkeypatch, capsys
):
    trained, data = two_sequences
    path = tmp_path / "run"
    trained.save(path)
    frame = {}
    for j, name in enumerate(data.modality_names):
        x = data.inputs[name].astype(np.float64)
        x[~data.observed[:, j]] = np.nan  # absent: blank throughout
        if name in data.lengths:  # blank cells after each row's valid steps
            x[np.arange(x.shape[1])[None, :] >= data.lengths[name][:, None]] = np.nan
        for k, column in enumerate(trained.table_columns[name]):
            frame[column] = x.reshape(len(x), -1)[:, k]
    frame["lengths.s"] = data.lengths["s"]
    frame["lengths.u"] = np.where(data.lengths["u"] > 0, data.lengths["u"], np.nan)  # blank
    source, target = tmp_path / "in.csv", tmp_path / "out.csv"
    pd.DataFrame(frame).to_csv(source, index=False)
    code, _, err = run(
        monkeypatch, capsys, "predict", str(path), "--input", str(source), "--output", str(target)
    )
    assert code == 0, err
    got = pd.read_csv(target)[["proba_0", "proba_1", "proba_2"]].to_numpy()
    np.testing.assert_allclose(got, trained.predict_proba(data), rtol=1e-6, atol=1e-9)


def _frame(trained, samples):
    """``samples`` as a table with the model's columns."""
    columns = trained.table_columns
    return pd.DataFrame(
        {c: samples[m][:, j] for m, cols in columns.items() for j, c in enumerate(cols)}
    )


@pytest.mark.parametrize(
    ("suffix", "spoil", "phrase"),
    [
        (".npz", lambda s: {**s, "m2": s["m2"].astype(str)}, "array 'm2' holds text, e.g. '"),
        (".npz", lambda s: {**s, "m0": s["m0"] > 0}, "array 'm0' holds booleans (dtype bool)"),
        (  # text columns in a Parquet file would convert without a word
            ".parquet",
            lambda f: f.astype({"m1.3": str}),
            "column 'm1.3' holds text, e.g. '-0.10891472790742324' in row 3; write numbers",
        ),
        (".parquet", lambda f: f.assign(**{"m0.0": f["m0.0"] > 0}), "column 'm0.0' holds bool"),
        (  # pandas' nullable booleans with a blank cell arrive as Python objects
            ".parquet",
            lambda f: f.assign(**{"m0.0": pd.array([None, True] * 3, dtype="boolean")}),
            "column 'm0.0' holds booleans, e.g. 'True' in row 1; write numbers",
        ),
        (
            ".parquet",
            lambda f: f.assign(**{"m2.0": pd.Categorical(["low", "high"] * 3)}),
            "column 'm2.0' holds text, e.g. 'low' in row 0; write numbers",
        ),
        (
            ".npz",
            lambda s: {**s, "m1": np.array("1.5")},
            "array 'm1' holds text, e.g. '1.5'; write",
        ),
        (  # CSV is text: a cell that is not a number leaves its column as text; the error
            # shows that cell, not the first number of its column
            ".csv",
            lambda f: f.astype({"m2.5": object}).assign(**{"m2.5": ["1.5"] * 5 + ["n/a!"]}),
            "column 'm2.5' holds text, e.g. 'n/a!' in row 5; write numbers (floats or integers)",
        ),
    ],
    ids=[
        "npz-text",
        "npz-bool",
        "parquet-text",
        "parquet-bool",
        "parquet-nullable-bool",
        "parquet-category",
        "npz-0d-text",
        "csv-text",
    ],
)
def test_input_files_with_text_or_booleans_for_numbers_stop_in_one_line(
    hemis_run, tmp_path, monkeypatch, capsys, suffix, spoil, phrase
):
    trained = TrainedModel.load(hemis_run)
    source = tmp_path / f"in{suffix}"
    if suffix == ".npz":
        np.savez(source, **spoil(_samples()))
    else:
        frame = spoil(_frame(trained, _samples()))
        frame.to_csv(source, index=False) if suffix == ".csv" else frame.to_parquet(source)
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert phrase in " ".join(err.split()), err


def test_a_ragged_or_too_deep_nested_list_stops_in_one_line(hemis_run):
    trained = TrainedModel.load(hemis_run)
    ragged = [[0.0] * 16] * 5 + [[0.0] * 15]  # the last row one value short
    deep = 0.0
    for _ in range(100_000):
        deep = [deep]
    for spoiled in (ragged, deep):
        with pytest.raises(MlmmError, match=r"array 'm0' is not rectangular .*\(N, 16\), NaN"):
            predict_table(trained, {**_samples(), "m0": spoiled})


def test_csv_numbers_are_read_as_numbers_quoted_or_not(hemis_run, tmp_path):
    """A CSV file is text: "1.5" quoted in a cell is the number 1.5, as pandas reads it."""
    from mlmm.serve.predict import read_input

    trained = TrainedModel.load(hemis_run)
    frame = _frame(trained, _samples())
    frame.to_csv(tmp_path / "plain.csv", index=False)
    lines = (tmp_path / "plain.csv").read_text().splitlines()
    quoted = [lines[0]] + [",".join(f'"{cell}"' for cell in line.split(",")) for line in lines[1:]]
    (tmp_path / "quoted.csv").write_text("\n".join(quoted) + "\n")
    assert '"-0.' in (tmp_path / "quoted.csv").read_text()
    want = predict_table(trained, read_input(tmp_path / "plain.csv"))
    got = predict_table(trained, read_input(tmp_path / "quoted.csv"))
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize(
    "write",
    [
        {"sep": ";"},  # a spreadsheet's CSV in many locales
        {"sep": ";", "decimal": ","},  # ... with decimal commas: 1,5
        {"sep": "\t"},
        {"lineterminator": "\r\n"},  # Windows line endings
        {"index": True},  # DataFrame.to_csv's default: an unnamed first column, the index
        {"encoding": "utf-8-sig"},  # Excel's "CSV UTF-8" begins with a byte-order mark
    ],
)
def test_a_csv_is_read_whatever_its_separator_index_and_line_endings(tmp_path, write):
    # was: a ';' file read as one column named 'a;b;c' (every column unknown), and an index
    # written by to_csv came back as a column 'Unnamed: 0' that the model called extra
    from mlmm.serve.predict import read_input

    frame = pd.DataFrame({"a": [1.5, -0.25, np.nan], "b": [2.0, np.nan, 3.0], "c": ["x", "y", "z"]})
    path = tmp_path / "table.csv"
    frame.to_csv(path, **{"index": False, **write})
    pd.testing.assert_frame_equal(read_input(path), frame)


def test_a_csv_typed_with_spaces_after_its_commas_names_its_columns_without_them(tmp_path):
    from mlmm.serve.predict import read_input

    (tmp_path / "typed.csv").write_text("a, b, c\n1.5, 2, x\n-0.25, , y\n")
    want = pd.DataFrame({"a": [1.5, -0.25], "b": [2.0, np.nan], "c": ["x", "y"]})
    pd.testing.assert_frame_equal(read_input(tmp_path / "typed.csv"), want)


def test_a_csv_in_another_encoding_than_utf8_is_one_line_naming_its_line(tmp_path):
    # was: "cannot read ... ('utf-8' codec can't decode byte 0xf6 in position 13 ...)", a
    # position in one of pandas' chunks, and no way out
    from mlmm.serve.predict import read_input

    (tmp_path / "latin.csv").write_bytes("a,b\n1,2\n3,größe\n".encode("latin-1"))
    with pytest.raises(MlmmError, match=r"is not UTF-8 text \(line 3, byte b'\\xf6'\); save"):
        read_input(tmp_path / "latin.csv")


def _corrupt_member_header(good, bad):
    """``good`` with the ``)`` closing member m1's header shape dropped (valid CRC-32s)."""
    import zipfile

    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    assert b"), }" in members["m1.npy"]
    members["m1.npy"] = members["m1.npy"].replace(b"), }", b",  }", 1)  # same length
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize("content", ["empty", "truncated", "not a zip", "member header"])
def test_an_empty_truncated_or_corrupt_npz_is_one_line(monkeypatch, capsys, tmp_path, content):
    """An empty .npz printed a bare "Aborted." (EOFError), a truncated or corrupt one gave a
    traceback (zipfile.BadZipFile), a member's corrupt header too (numpy's TokenError)."""
    good = tmp_path / "good.npz"
    np.savez(good, **_samples())
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    if content == "member header":
        _corrupt_member_header(good, bad)
    else:
        bad.write_bytes(
            {
                "empty": b"",
                "truncated": data[: len(data) // 2],
                "not a zip": b"PK\x03\x04" + b"x" * 40,
            }[content]
        )
    from mlmm.serve.predict import read_input

    reason = r" \(its header is corrupt\)" if content == "member header" else ""
    with pytest.raises(MlmmError, match=rf"cannot read .*bad.npz' as .npz{reason}"):
        read_input(bad)
    monkeypatch.setattr(sys, "argv", ["mlmm", "predict", str(tmp_path), "--input", str(bad)])
    monkeypatch.setattr("mlmm.train.TrainedModel.load", lambda path: None)
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "check the file" in err


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_write_table_on_a_full_disk_is_one_line_and_keeps_the_earlier_file(
    tmp_path, monkeypatch, suffix
):
    """A full disk is atomic_write's OutputWriteError (still an OSError, naming what was kept);
    write_table re-wrapped it as a plain MlmmError that callers catching OSError missed."""
    import errno
    import os

    from mlmm.errors import OutputWriteError
    from mlmm.serve import write_table

    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"")  # an earlier (empty) output

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_table(pd.DataFrame({"prediction": [0, 1]}), path)
    assert isinstance(info.value, OutputWriteError)
    assert str(info.value) == (
        f"cannot write {path} (No space left on device); free some disk space or choose "
        f"another path; the earlier file is unchanged"
    )
    assert path.read_bytes() == b"" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_rows_whose_answer_overflows_to_nan_are_one_line_not_the_first_class(
    monkeypatch, capsys, tmp_path, hemis_run
):
    """It wrote ``prediction`` 0 (the argmax of NaN) and empty probabilities for them."""
    arrays = _samples()
    arrays["m2"][[2, 4]] = 3e38  # finite, far beyond anything seen in training
    np.savez(tmp_path / "in.npz", **arrays)
    code, out, err = run(
        monkeypatch, capsys, "predict", str(hemis_run), "--input", str(tmp_path / "in.npz")
    )
    assert code == 2 and out == ""
    assert "the model's answer is NaN or infinite in 2 row(s) (first: [2, 4])" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(MlmmError, match="training data's scale"):
        predict_table(TrainedModel.load(hemis_run), arrays)
