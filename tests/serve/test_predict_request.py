"""`mlmm predict --input x.json`: a POST /predict body in a file gets the server's answer,
and the server's one-line refusal (one parser: mlmm.serve.request)."""

import io
import json
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra")
from fastapi.testclient import TestClient  # noqa: E402

from mlmm import cli  # noqa: E402
from mlmm.serve.app import create_app  # noqa: E402
from mlmm.train import TrainedModel  # noqa: E402


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _vector(seed, n=16):
    return np.random.default_rng(seed).normal(size=n).round(4).tolist()


@pytest.fixture(scope="module")
def client(hemis_run):
    # served under the run directory's name, as `mlmm serve RUN` serves it
    app = create_app({hemis_run.name: TrainedModel.load(hemis_run)})
    with TestClient(app) as c:
        yield c


INSTANCES = [
    {"m0": _vector(0), "m1": None, "m2": _vector(1)},  # null: absent
    {"m2": _vector(2)},  # left out: absent
    {"m0": [1] * 16, "m1": _vector(3), "m2": _vector(4)},  # integers are numbers
    {"m1": _vector(5)},
]


def _answers(table: pd.DataFrame) -> list[dict]:
    """The CLI table in the server's response shape."""
    out = []
    for _, row in table.iterrows():
        proba = {c[len("proba_") :]: row[c] for c in table.columns if c.startswith("proba_")}
        out.append(
            {
                "prediction": int(row["prediction"]),
                "probabilities": proba,
                "modalities": row["modalities"].split("+"),
                "validation_score": row["validation_accuracy"],
            }
        )
    return out


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_a_request_file_answers_as_the_server_does(
    hemis_run, client, tmp_path, monkeypatch, capsys, suffix
):
    body = {"instances": INSTANCES}
    served = client.post("/predict", json=body)
    assert served.status_code == 200, served.text
    source = tmp_path / f"request{suffix}"
    if suffix == ".json":
        source.write_text(json.dumps(body))
    else:  # one instance per line; blank lines skipped
        source.write_text("\n".join(json.dumps(i) for i in INSTANCES) + "\n\n")
    target = tmp_path / "out.csv"
    code, _, err = run(
        monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source), "--output",
        str(target),
    )  # fmt: skip
    assert code in (0, None), err
    got = _answers(pd.read_csv(target))
    want = served.json()["predictions"]
    assert len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        assert g["prediction"] == w["prediction"] and g["modalities"] == w["modalities"]
        np.testing.assert_allclose(
            [g["probabilities"][k] for k in sorted(w["probabilities"])],
            [w["probabilities"][k] for k in sorted(w["probabilities"])],
            rtol=1e-6,
        )
        assert g["validation_score"] == pytest.approx(w["validation_score"])


def test_the_requests_on_empty_and_model_are_read_as_the_server_reads_them(
    hemis_run, client, tmp_path, monkeypatch, capsys
):
    body = {"model": hemis_run.name, "instances": [{}, {"m0": _vector(0)}], "on_empty": "prior"}
    served = client.post("/predict", json=body).json()["predictions"]
    source = tmp_path / "prior.json"
    source.write_text(json.dumps(body))
    code, out, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code in (0, None), err
    table = pd.read_csv(io.StringIO(out))
    assert table["modalities"].tolist() == ["(none)", "m0"]
    np.testing.assert_allclose(
        table[[f"proba_{k}" for k in range(4)]].to_numpy(),
        [[p["probabilities"][str(k)] for k in range(4)] for p in served],
        rtol=1e-6,
    )


NaN_BODY = '{"instances": [{"m0": [NaN' + ", 0" * 15 + "]}]}"
BAD = {
    "unknown-modality": {"instances": [{"m9": _vector(0)}]},
    "short": {"instances": [{"m0": _vector(0, 15)}]},
    "rank": {"instances": [{"m0": [[1.0] * 16]}]},
    "nan": NaN_BODY,
    "overflow": {"instances": [{"m0": [1e39] * 16}]},
    "string": {"instances": [{"m0": ["a"] * 16}]},
    "boolean": {"instances": [{"m0": [True] * 16}]},
    "ragged": {"instances": [{"m0": [[1.0], [1.0, 2.0]]}]},
    "not-a-list": {"instances": [{"m0": "abc"}]},
    "no-modality": {"instances": [{}]},
    "no-instances": {"instances": []},
    "bare-list": [{"m0": _vector(0)}],
    "extra-field": {"instances": [{"m0": _vector(0)}], "extra": 1},
    "unknown-model": {"instances": [{"m0": _vector(0)}], "model": "x"},
    "on-empty": {"instances": [{"m0": _vector(0)}], "on_empty": "x"},
    "malformed": "{not json",
    "empty": "",
    "huge-integer": '{"instances": [{"m0": [' + "9" * 5000 + "]}]}",
    "deep": "[" * 20000 + "]" * 20000,
    "null": "null",
    "number": "5",
    "string-body": '"x"',
    "true": "true",
    "instances-null": '{"instances": null}',
    "instance-null": '{"instances": [null]}',
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_request_file_gets_the_servers_one_line(
    hemis_run, client, tmp_path, monkeypatch, capsys, name
):
    body = BAD[name]
    content = body if isinstance(body, str) else json.dumps(body)
    served = client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert served.status_code in (400, 422), served.text
    source = tmp_path / "bad.json"
    source.write_text(content)
    code, out, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and out == ""
    assert err == f"error: {served.json()['detail']}\n"


def test_a_malformed_jsonl_line_is_named_by_its_number(hemis_run, tmp_path, monkeypatch, capsys):
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"m0": _vector(0)}) + "\n\n{m0: [1]}\n")
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: line 3: body: malformed JSON (Expecting property name")


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        ({"m0": [1.0]}, "instances[1].m0: expected shape [16], got [1]"),  # the model's check
        ([1.0], "instances[1]: Input should be a valid dictionary"),  # the request's schema
        ({}, "instances[1]: no modality present"),
    ],
)
def test_a_bad_jsonl_instance_is_named_by_its_line(
    hemis_run, tmp_path, monkeypatch, capsys, line, detail
):
    """Was the server's detail alone ("instances[1].m0: ..."): the instance's index counts
    neither the blank lines nor from 1, so it named a different line of the file."""
    source = tmp_path / "bad.jsonl"
    source.write_text(json.dumps({"m0": _vector(0)}) + "\n\n" + json.dumps(line) + "\n")
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: line 3: {detail}")


def test_another_suffix_is_refused_naming_the_request_files(
    hemis_run, tmp_path, monkeypatch, capsys
):
    source = tmp_path / "in.txt"
    source.write_text("{}")
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert "or a .json/.jsonl request (as POST /predict takes)" in err


def test_variable_length_sequences_in_a_request_file_answer_as_served(
    two_sequences, tmp_path, monkeypatch, capsys
):
    trained, _ = two_sequences
    path = trained.save(tmp_path / "seq")
    rng = np.random.default_rng(1)
    instances = [
        {"a": rng.normal(size=5).tolist(), "s": rng.normal(size=(3, 2)).tolist()},
        {"s": rng.normal(size=(12, 2)).tolist(), "u": rng.normal(size=(1, 3)).tolist()},
        {"a": rng.normal(size=5).tolist(), "u": None},
    ]
    with TestClient(create_app({"seq": trained})) as c:
        served = c.post("/predict", json={"instances": instances}).json()["predictions"]
    source = tmp_path / "seq.json"
    source.write_text(json.dumps({"instances": instances}))
    code, out, err = run(monkeypatch, capsys, "predict", str(path), "--input", str(source))
    assert code in (0, None), err
    table = pd.read_csv(io.StringIO(out))
    np.testing.assert_allclose(
        table[[f"proba_{k}" for k in range(3)]].to_numpy(),
        [[p["probabilities"][str(k)] for k in range(3)] for p in served],
        rtol=1e-6,
    )


def test_a_request_on_a_jsonl_line_is_named_as_such(hemis_run, tmp_path, monkeypatch, capsys):
    source = tmp_path / "requests.jsonl"
    source.write_text(json.dumps({"instances": [{"m0": _vector(0)}]}) + "\n")
    code, _, err = run(monkeypatch, capsys, "predict", str(hemis_run), "--input", str(source))
    assert code == 2 and err.count("\n") == 1
    assert 'line 1: holds a request ({"instances": [...]}); a .jsonl line is one instance' in err
