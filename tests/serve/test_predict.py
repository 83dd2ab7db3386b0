"""`mlmm predict`: files in, one row per sample out, with the score of its presence pattern."""

import sys

import numpy as np
import pandas as pd
import pytest

from mlmm import cli
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
        columns = trained.table_columns
        frame = pd.DataFrame(
            {c: samples[m][:, j] for m, cols in columns.items() for j, c in enumerate(cols)}
        )
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
