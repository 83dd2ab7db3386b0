"""One answer four ways: Python, `mlmm predict`'s files, the HTTP API and the ONNX graph agree
on every modality subset (a single modality included), variable-length sequences included."""

import itertools
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra")
pytest.importorskip("onnxruntime", reason="needs the export extra")

from fastapi.testclient import TestClient  # noqa: E402

import mlmm  # noqa: E402
from mlmm.serve.app import create_app  # noqa: E402
from mlmm.serve.export import export_onnx, onnx_session  # noqa: E402
from mlmm.serve.predict import predict_table, read_input  # noqa: E402
from mlmm.testing import contract_dataset  # noqa: E402

N = 4


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """late-fusion on vectors a [6], b [4] and a sequence s of 1 to 12 steps [12, 2], saved and
    loaded as a deployment would; its ONNX session; samples with their valid steps."""
    data = contract_dataset(n_samples=60)
    data = replace(data, lengths={"s": np.random.default_rng(0).integers(1, 13, size=60)})
    model = mlmm.create_method("late-fusion", data.specs, data.task, hidden=16, embed_dim=8)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, data)
    path = tmp_path_factory.mktemp("agreement")
    trained = mlmm.TrainedModel.load(trained.save(path / "run"))
    export_onnx(trained, path / "model.onnx")
    rng = np.random.default_rng(1)
    arrays = {m: rng.normal(size=(N, *s)) for m, s in trained.modality_shapes.items()}
    steps = np.array([1, 12, 5, 3])
    arrays["s"][np.arange(12)[None, :] >= steps[:, None]] = np.nan  # padding after the steps
    return trained, onnx_session(path / "model.onnx"), arrays, steps, path


SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(("a", "b", "s"), r)]


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_python_files_http_and_onnx_agree_on_every_subset(served, subset):
    trained, session, arrays, steps, path = served
    given = {m: arrays[m] for m in subset}
    lengths = {"s": steps} if "s" in subset else None
    expected = trained.predict_proba(given, lengths=lengths)  # [N, K]
    answers = {}
    # mlmm predict: what it reads from each file kind, through predict_table
    npz, columns = path / "in.npz", {}
    np.savez(npz, **given, **({"lengths.s": steps} if lengths else {}))
    for m in subset:
        flat = given[m].reshape(N, -1)
        columns.update({f"{m}.{j}": flat[:, j] for j in range(flat.shape[1])})
    if lengths:
        columns["lengths.s"] = steps
    pd.DataFrame(columns).to_csv(path / "in.csv", index=False)
    pd.DataFrame(columns).to_parquet(path / "in.parquet")
    for kind in ("npz", "csv", "parquet"):
        table = predict_table(trained, read_input(path / f"in.{kind}"))
        answers[kind] = table[[f"proba_{k}" for k in range(3)]].to_numpy()
        assert table["modalities"].tolist() == ["+".join(subset)] * N
    # the HTTP API: each sequence as its valid steps only
    instances = [
        {m: (given[m][i, : steps[i]] if m == "s" else given[m][i]).tolist() for m in subset}
        for i in range(N)
    ]
    with TestClient(create_app({"m": trained})) as client:
        reply = client.post("/predict", json={"instances": instances})
    assert reply.status_code == 200, reply.text
    predictions = reply.json()["predictions"]
    answers["http"] = np.array(
        [[p["probabilities"][str(k)] for k in range(3)] for p in predictions]
    )
    assert all(p["modalities"] == list(subset) for p in predictions)
    # the ONNX graph: zeros where absent, present and lengths say which values count
    feed = {m: np.nan_to_num(arrays[m]).astype(np.float32) for m in ("a", "b", "s")}
    feed["present"] = np.tile([m in subset for m in ("a", "b", "s")], (N, 1))
    feed["lengths.s"] = steps if lengths else np.zeros(N, dtype=np.int64)
    answers["onnx"] = session.run(["probabilities"], feed)[0]
    for kind, got in answers.items():
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=kind)
