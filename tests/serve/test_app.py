"""The HTTP service: answers from any subset, refuses bad input with a 4xx naming the field."""

import asyncio
import json
import math
import sys
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mlmm  # noqa: E402
from mlmm import cli  # noqa: E402
from mlmm.errors import MlmmError  # noqa: E402
from mlmm.serve.app import PredictResponse, create_app  # noqa: E402
from mlmm.serve.loading import check_address, load_models  # noqa: E402
from mlmm.train import TrainedModel  # noqa: E402


@pytest.fixture(scope="module")
def hemis(hemis_run):
    return TrainedModel.load(hemis_run)


@pytest.fixture(scope="module")
def client(hemis):
    with TestClient(create_app({"hemis": hemis}, max_body_bytes=200_000)) as c:
        yield c


def _vector(seed, n=16):
    return np.random.default_rng(seed).normal(size=n).round(4).tolist()


def test_single_and_batch_answers_match_the_python_model(client, hemis):
    instances = [
        {"m0": _vector(0), "m1": _vector(1), "m2": _vector(2)},
        {"m2": _vector(3)},  # m0, m1 left out
        {"m1": _vector(4), "m0": None},  # null = absent, key order free
    ]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    body = PredictResponse.model_validate(response.json())
    arrays = {m: np.full((3, 16), np.nan) for m in ("m0", "m1", "m2")}
    for i, instance in enumerate(instances):
        for m, v in instance.items():
            if v is not None:
                arrays[m][i] = v
    expected = hemis.predict_proba(arrays)
    got = np.array([[p.probabilities[str(k)] for k in range(4)] for p in body.predictions])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [p.modalities for p in body.predictions] == [["m0", "m1", "m2"], ["m2"], ["m1"]]
    assert [p.prediction for p in body.predictions] == expected.argmax(axis=1).tolist()
    scores = hemis.validation_scores()
    assert body.predictions[1].validation_score == scores["m2"]["accuracy"]
    one = client.post("/predict", json={"instances": [{"m2": _vector(3)}]}).json()
    alone = list(one["predictions"][0]["probabilities"].values())
    np.testing.assert_allclose(alone, got[1], atol=1e-6)  # float32 batches: same to ~1e-7


NaN_BODY = '{"instances": [{"m0": [NaN' + ", 0" * 15 + "]}]}"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "phrase"),
    [
        ({"instances": [{"m9": _vector(0)}]}, None, 422, "instances[0].m9: unknown modality"),
        (
            {"instances": [{"m0": _vector(0, 15)}]},
            None,
            422,
            "instances[0].m0: expected shape [16]",
        ),
        ({"instances": [{"m0": [[1.0] * 16]}]}, None, 422, "instances[0].m0: expected shape"),
        (NaN_BODY, None, 422, "instances[0].m0: holds NaN or inf"),
        (
            {"instances": [{"m0": ["a"] * 16}]},
            None,
            422,
            'instances[0].m0[0]: expected a number, got the string "a"',
        ),
        (
            {"instances": [{"m0": [[1.0], [1.0, 2.0]]}]},
            None,
            422,
            "instances[0].m0: must be a nest",
        ),
        ({"instances": [{"m0": "abc"}]}, None, 422, "instances[0].m0"),
        ({"instances": [{}]}, None, 422, "instances[0]: no modality present"),
        ({"instances": []}, None, 422, "instances:"),
        ({"instances": [{"m0": _vector(0)}], "extra": 1}, None, 422, "extra"),
        ({"instances": [{"m0": _vector(0)}], "model": "x"}, None, 422, "model: unknown model"),
        ({"instances": [{"m0": _vector(0)}], "on_empty": "x"}, None, 422, "on_empty"),
        ("{not json", None, 400, "body: malformed JSON"),
        ("", None, 400, "body: empty; send a JSON object"),  # was 422 'Field required'
        ("[]", None, 422, 'body: expected a JSON object {"instances"'),  # was pydantic's
        ("null", None, 422, "got a JSON null"),  # was "got a JSON value"
        ('{"instances": [{"m0": [' + "9" * 5000 + "]}]}", None, 400, "4,300 digits"),
        ("[" * 20000 + "]" * 20000, None, 400, "body: cannot be parsed"),
        ({"instances": [{"m0": _vector(0)}]}, "text/plain", 415, "content-type"),
        ({"instances": [{"m0": [1.0] * 16}] * 3000}, None, 413, "body: "),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, body, content_type, status, phrase):
    content = body if isinstance(body, str) else json.dumps(body)
    headers = {"content-type": content_type or "application/json"}
    response = client.post("/predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert phrase in response.json()["detail"]


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        (
            ["1.5"] + [0.0] * 15,
            'instances[0].m1[0]: expected a number, got the string "1.5"; send numbers unquoted '
            '(1.5, not "1.5")',
        ),
        ([0.0] * 3 + [True] + [0.0] * 12, "instances[0].m1[3]: expected a number, got the "),
        ([0.0] * 15 + [False], "instances[0].m1[15]: expected a number, got the boolean false; "),
        ([0.0] * 15 + ["a\nb" * 9], 'got the string "a\\nba\\nba\\nba\\nba\\nba\\n..."'),
    ],
    ids=["number-string", "true", "false", "long-string"],
)
def test_numbers_sent_as_strings_or_booleans_are_a_422_naming_the_entry(client, value, phrase):
    """Strict numbers: numpy would read "1.5" as 1.5 and true as 1.0, answering a question
    the caller did not ask. One line naming the entry and the fix."""
    body = {"instances": [{"m0": _vector(0)}, {"m1": value}]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert phrase.replace("instances[0]", "instances[1]") in detail and "\n" not in detail


def test_integers_are_numbers(client, hemis):
    ints = list(range(-8, 8))
    response = client.post("/predict", json={"instances": [{"m0": ints, "m2": [1] * 16}]})
    assert response.status_code == 200, response.text
    got = list(response.json()["predictions"][0]["probabilities"].values())
    floats = {"m0": np.array([ints], dtype=float), "m2": np.ones((1, 16))}
    np.testing.assert_allclose(got, hemis.predict_proba(floats)[0], atol=1e-6)


def test_on_empty_prior_answers_a_sample_with_nothing(client, hemis):
    response = client.post("/predict", json={"instances": [{"m0": None}], "on_empty": "prior"})
    assert response.status_code == 200
    answer = response.json()["predictions"][0]
    assert answer["modalities"] == []
    np.testing.assert_allclose(list(answer["probabilities"].values()), hemis.prior)


def test_health_model_and_metrics(client, hemis):
    assert client.get("/health").json() == {"status": "ok", "models": ["hemis"]}
    info = client.get("/model").json()["models"][0]
    assert info["classes"] == [0, 1, 2, 3]
    m0 = {"name": "m0", "kind": "vector", "shape": [16], "variable_length": False}
    assert info["modalities"][0] == m0
    table = {row["modalities"]: row["metrics"] for row in info["validation"]}
    assert len(table) == 7  # every non-empty subset of three modalities
    full = hemis.validation_scores()["m0+m1+m2"]["accuracy"]
    assert table["m0+m1+m2"]["accuracy"] == pytest.approx(full)
    client.post("/predict", json={"instances": [{"m1": _vector(9)}]})
    client.post("/predict", content="{", headers={"content-type": "application/json"})
    text = client.get("/metrics").text
    assert 'mlmm_patterns_total{model="hemis",pattern="m1"}' in text
    assert 'mlmm_errors_total{route="/predict",status="400"}' in text
    assert "# TYPE mlmm_request_duration_seconds histogram" in text
    assert 'mlmm_request_duration_seconds_bucket{le="+Inf"}' in text


def test_several_models_are_served_by_name(hemis, late_fusion_run):
    late = TrainedModel.load(late_fusion_run)
    with TestClient(create_app({"a": hemis, "b": late})) as c:
        instance = {"m0": _vector(1)}
        missing = c.post("/predict", json={"instances": [instance]})
        assert missing.status_code == 422 and "model: several models" in missing.json()["detail"]
        got = c.post("/predict", json={"instances": [instance], "model": "b"}).json()
        assert got["model"] == "b"
        expected = late.predict_proba({"m0": np.array([instance["m0"]])})[0]
        np.testing.assert_allclose(
            list(got["predictions"][0]["probabilities"].values()), expected, atol=1e-6
        )
        assert [m["name"] for m in c.get("/model").json()["models"]] == ["a", "b"]


def test_concurrent_single_requests_are_micro_batched(hemis):
    app = create_app({"hemis": hemis}, max_wait_ms=50)
    instances = [{"m0": _vector(i), "m2": _vector(100 + i)} for i in range(24)]

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                responses = await asyncio.gather(
                    *(c.post("/predict", json={"instances": [x]}) for x in instances)
                )
        return responses

    responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    arrays = {
        "m0": np.array([x["m0"] for x in instances]),
        "m2": np.array([x["m2"] for x in instances]),
    }
    expected = hemis.predict_proba(arrays)
    got = np.array([list(r.json()["predictions"][0]["probabilities"].values()) for r in responses])
    np.testing.assert_allclose(got, expected, atol=1e-6)  # each answer went to its request
    metrics = app.state.metrics
    assert metrics.batched_samples == 24 and metrics.batches < 24


def test_a_request_alone_is_answered_without_the_batching_wait(hemis):
    app = create_app({"hemis": hemis}, max_wait_ms=1000)

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.post("/predict", json={"instances": [{"m1": _vector(0)}]})  # warm-up
                start = time.perf_counter()
                response = await c.post("/predict", json={"instances": [{"m1": _vector(1)}]})
                return response, time.perf_counter() - start

    response, seconds = asyncio.run(main())
    assert response.status_code == 200
    assert seconds < 0.5  # an idle queue dispatches at once; it used to wait max_wait_ms


# ---------------------------------------------------------------- against the OpenAPI schema
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(
        allow_nan=False, allow_infinity=False
    )  # JSON has no inf; NaN/inf are tested by hand
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
_vectors = st.lists(st.floats(-1e3, 1e3), min_size=15, max_size=17) | st.none() | _json
_instances = st.lists(
    st.dictionaries(st.sampled_from(["m0", "m1", "m2", "m3"]), _vectors, max_size=3),
    min_size=0,
    max_size=3,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.fixed_dictionaries(
        {"instances": _instances},
        optional={
            "on_empty": st.sampled_from(["error", "prior", "other"]),
            "model": st.sampled_from(["hemis", "nope"]),
            "junk": _json,
        },
    )
    | _json
)
def test_any_body_gets_a_documented_answer_never_a_5xx(client, body):
    schema = client.app.openapi()
    operation = schema["paths"]["/predict"]["post"]
    documented = {int(code) for code in operation["responses"]}
    assert set(operation["requestBody"]["content"]) == {"application/json"}
    response = client.post("/predict", json=body)
    assert response.status_code < 500, response.text
    assert response.status_code in documented
    if response.status_code == 200:
        PredictResponse.model_validate(response.json())
        assert all(
            math.isclose(sum(p["probabilities"].values()), 1.0, rel_tol=1e-5)
            for p in response.json()["predictions"]
        )
    else:
        assert response.json()["detail"]


# ---------------------------------------------------------------- the command
def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mlmm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_serve_refuses_a_non_artifact_and_a_tampered_one_in_one_line(
    monkeypatch, capsys, tmp_path, hemis_run
):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hi")
    code, _, err = run(monkeypatch, capsys, "serve", str(tmp_path / "notes"))
    assert code == 2 and err.count("\n") == 1 and "not an mlmm model directory" in err
    import shutil

    tampered = tmp_path / "tampered"
    shutil.copytree(hemis_run, tampered)
    config = tampered / "config.json"
    config.write_text(config.read_text().replace('"hidden": 256', '"hidden": 255'))
    code, _, err = run(monkeypatch, capsys, "serve", "--model", f"x={tampered}")
    assert code == 2 and err.count("\n") == 1 and "does not match the hash" in err


@pytest.mark.parametrize("port", ["99999", "-1", "0"])
def test_serve_refuses_a_port_out_of_range_in_one_line(monkeypatch, capsys, hemis_run, port):
    # was: 99999 announced and served on, -1 uvicorn's "Servname not supported" and status 3
    code, out, err = run(monkeypatch, capsys, "serve", str(hemis_run), "--port", port)
    assert code == 2 and err.count("\n") == 1 and f"in [1, 65535], got {port}" in err
    assert "serving" not in out


def test_serve_refuses_a_micro_batch_wait_without_micro_batching(monkeypatch, capsys, hemis_run):
    # was: --max-wait-ms silently unused under --no-micro-batch
    args = ["serve", str(hemis_run), "--no-micro-batch", "--max-wait-ms", "5"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "--max-wait-ms is the micro-batch" in err


def test_serve_max_instances_bounds_a_request(monkeypatch, capsys, hemis_run):
    """The per-request sample limit was fixed at 1,024 under `mlmm serve` (create_app only)."""
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append(app))
    code, _, _ = run(monkeypatch, capsys, "serve", str(hemis_run), "--max-instances", "2")
    assert code == 0
    with TestClient(served[0]) as c:
        three = {"instances": [{"m0": _vector(k)} for k in range(3)]}
        answer = c.post("/predict", json=three)
        assert answer.status_code == 422
        assert "3 samples is over the limit of 2" in answer.json()["detail"]
        assert c.post("/predict", json={"instances": three["instances"][:2]}).status_code == 200
    code, out, err = run(monkeypatch, capsys, "serve", str(hemis_run), "--max-instances", "0")
    assert code == 2 and err.count("\n") == 1 and "max_instances must be an integer >= 1" in err


def test_serve_refuses_an_address_in_use_before_announcing_it(monkeypatch, capsys, hemis_run):
    import socket

    with socket.socket() as holder:  # was: "serving ... on", then uvicorn's error, status 3
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        code, out, err = run(monkeypatch, capsys, "serve", str(hemis_run), "--port", port)
    assert code == 2 and err.count("\n") == 1
    assert f"cannot listen on 127.0.0.1:{port}" in err and "serving" not in out


def _listening(host: str, family=None):
    import socket

    holder = socket.socket(family or socket.AF_INET)
    holder.bind((host, 0))
    holder.listen()
    return holder


def test_check_address_binds_ipv6_as_the_server_does():
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with _listening("127.0.0.1") as holder:
        port = holder.getsockname()[1]
        # was refused ("Address already in use"): the probe bound '::' dual-stack, where
        # asyncio (uvicorn) binds IPv6-only and serves beside an IPv4 listener on the port
        check_address("::", port)
        with pytest.raises(MlmmError, match=rf"cannot listen on 127\.0\.0\.1:{port} "):
            check_address("127.0.0.1", port)
    with _listening("::", socket.AF_INET6) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(MlmmError, match=rf"cannot listen on \[::\]:{port} .*another --port"):
            check_address("::", port)


def test_check_address_names_the_host_when_it_is_not_here():
    # was: "cannot listen on 192.0.2.123:8000 (Cannot assign requested address); choose
    # another --port": another port would not help
    with pytest.raises(MlmmError, match="--host '203.0.113.7' is not an address of this machine"):
        check_address("203.0.113.7", 8000)
    with pytest.raises(MlmmError, match="--host 'no-such-host.invalid' is not an address"):
        check_address("no-such-host.invalid", 8000)


def test_model_names_are_checked(hemis_run):
    models = load_models(None, [f"a={hemis_run}", f"b = {hemis_run}"])
    assert list(models) == ["a", "b"]
    with pytest.raises(Exception, match="NAME=RUN"):
        load_models(None, ["oops"])
    with pytest.raises(Exception, match="given twice"):
        load_models(hemis_run, [f"run={hemis_run}"])


def test_shutdown_answers_the_requests_in_flight(hemis):
    app = create_app({"hemis": hemis}, max_wait_ms=300)

    async def main():
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            tasks = [
                asyncio.create_task(c.post("/predict", json={"instances": [{"m1": _vector(i)}]}))
                for i in range(5)
            ]
            await asyncio.sleep(0.05)  # queued; the worker is still waiting for more
            await lifespan.__aexit__(None, None, None)  # shutdown: drains the queue first
            return await asyncio.gather(*tasks)

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 5
    assert app.state.metrics.batches == 1


def test_a_regression_model_answers_values(tmp_path):
    from mlmm.testing import contract_dataset

    data = contract_dataset(task="regression")
    model = mlmm.create_method("hemis", data.specs, data.task)
    trained = mlmm.Trainer(max_epochs=2, progress=False).fit(model, data)
    name = data.modality_names[0]
    row = data.inputs[name][:1]
    with TestClient(create_app({"r": trained})) as c:
        body = {"instances": [{name: row[0].tolist()}]}
        answer = c.post("/predict", json=body).json()["predictions"][0]
    expected = trained.predict({name: row})[0]
    assert answer["probabilities"] is None and answer["validation_metric"] == "rmse"
    assert answer["prediction"] == pytest.approx(expected, rel=1e-5)


def _from_schema(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    """A strategy for JSON values valid under ``schema`` (the subset of JSON Schema that the
    app's OpenAPI schema uses: $ref, anyOf, enum, object, array, scalars), like schemathesis."""
    if "$ref" in schema:
        return _from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth)
    if "anyOf" in schema:
        return st.one_of([_from_schema(s, components, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        inner = {k: _from_schema(v, components, depth + 1) for k, v in properties.items()}
        values = schema.get("additionalProperties")
        strategy = st.fixed_dictionaries(
            {k: v for k, v in inner.items() if k in required},
            optional={k: v for k, v in inner.items() if k not in required},
        )
        if isinstance(values, dict):  # a map: keys are modality names here
            keys = st.sampled_from(["m0", "m1", "m2", "m9"]) | st.text(max_size=3)
            return st.dictionaries(keys, _from_schema(values, components, depth + 1), max_size=3)
        return strategy
    if kind == "array":
        # free items ({}): numbers mostly, with a few of other types, of plausible lengths
        items = schema.get("items") or {}
        element = (
            _from_schema(items, components, depth + 1)
            if items
            else st.floats(-1e3, 1e3) | st.sampled_from([None, "x", [1.0], float("nan")])
        )
        low = schema.get("minItems", 0)
        high = max(low, 17 if not items else 3)
        return st.lists(element, min_size=low, max_size=high)
    scalars = {
        "string": st.text(max_size=5),
        "number": st.floats(allow_nan=False),
        "integer": st.integers(-10, 10),
        "boolean": st.booleans(),
        "null": st.none(),
    }
    return scalars.get(kind, st.none() | st.floats(-10, 10) | st.text(max_size=3))


def test_bodies_drawn_from_the_openapi_schema_never_get_a_5xx(hemis):
    app = create_app({"hemis": hemis})
    openapi = app.openapi()
    components = openapi["components"]["schemas"]
    operation = openapi["paths"]["/predict"]["post"]
    documented = {int(code) for code in operation["responses"]}
    request = operation["requestBody"]["content"]["application/json"]["schema"]
    bodies = _from_schema(request, components)

    with TestClient(app) as c:

        @settings(max_examples=80, deadline=None)
        @given(body=bodies)
        def check(body):
            content = json.dumps(body)  # NaN written as NaN, as Python's json reads it
            headers = {"content-type": "application/json"}
            response = c.post("/predict", content=content, headers=headers)
            assert response.status_code < 500, response.text
            assert response.status_code in documented
            if response.status_code == 200:
                PredictResponse.model_validate(response.json())

        check()


def test_a_multilabel_model_is_refused_at_start_in_one_line():
    from mlmm.errors import MlmmError
    from mlmm.testing import contract_dataset

    data, phrase = contract_dataset(n_samples=32, task="multilabel"), "is multilabel"
    model = mlmm.create_method("zero-impute", data.specs, data.task, hidden=8)
    trained = mlmm.Trainer(max_epochs=1, progress=False).fit(model, data)
    with pytest.raises(MlmmError, match=phrase) as err:
        create_app({"m": trained})
    assert "\n" not in str(err.value)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM and SIGHUP are not signals there")
@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_serve_stopped_by_sigterm_says_so_in_one_line(hemis_run, name):
    """A stopped server ended with exit code 0 and no word; Ctrl-C while it started gave
    uvicorn's exit code 3 and a RuntimeWarning. SIGHUP (its terminal closed) killed it."""
    import signal
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlmm.cli", "serve", str(hemis_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        proc.send_signal(getattr(signal, name))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + getattr(signal, name), err
    assert err.strip() == (
        f"interrupted by {name}; the server answered its in-flight requests and stopped"
    )


def test_a_body_that_stalls_is_answered_408_not_held_for_ever(monkeypatch):
    """A client that announced a body and never sent it held its request, and the server's
    shutdown, until uvicorn cancelled it after 30 s with a traceback."""
    from mlmm.serve import app as app_module

    monkeypatch.setattr(app_module, "BODY_IDLE_SECONDS", 0.1)
    sent = []

    async def stalled() -> dict:
        await asyncio.sleep(3600)  # the rest of the body never comes
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    async def inner(scope, receive, send) -> None:
        raise AssertionError("a body never received reached the app")

    guard = app_module._BodyGuard(inner, 1 << 20, app_module.ServiceMetrics())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
    }
    asyncio.run(asyncio.wait_for(guard(scope, stalled, send), 5))
    assert sent[0]["status"] == 408
    assert b"nothing received for 0.1 s" in sent[1]["body"]


def test_a_slow_body_that_never_stalls_is_read_whole(monkeypatch):
    """The 408 is for a body that stalls, not for a slow one: the limit is on the time between
    two chunks, never on the whole upload (here 8 chunks over about 4 limits)."""
    from mlmm.serve import app as app_module

    monkeypatch.setattr(app_module, "BODY_IDLE_SECONDS", 0.1)
    payload = json.dumps({"instances": [{"m0": [1.0] * 16}]}).encode()
    chunks = [payload[i * len(payload) // 8 : (i + 1) * len(payload) // 8] for i in range(8)]
    seen = {}

    async def slow() -> dict:
        await asyncio.sleep(0.05)  # half the idle limit between chunks
        chunk = chunks.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict) -> None:
        raise AssertionError(f"the guard answered {message}")

    async def inner(scope, receive, send) -> None:
        seen["body"] = (await receive())["body"]

    guard = app_module._BodyGuard(inner, 1 << 20, app_module.ServiceMetrics())
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"application/json")],
    }
    start = time.perf_counter()
    asyncio.run(asyncio.wait_for(guard(scope, slow, send), 5))
    assert time.perf_counter() - start > 3 * app_module.BODY_IDLE_SECONDS
    assert seen["body"] == payload


def test_an_answer_that_overflows_to_nan_is_a_422_not_a_null_or_the_first_class(client, hemis):
    """Finite values far outside the training range overflow the model's float32 arithmetic:
    it answered 200 with ``"probabilities": {"0": null, ...}`` and ``"prediction": 0`` (the
    argmax of NaN), which the response schema does not allow and no caller can tell apart."""
    huge = [3e38] * 16
    assert np.isnan(hemis.predict_raw({"m0": np.array([huge])})).all()  # what the model gives
    body = {"instances": [{"m1": _vector(0)}, {"m0": huge}]}
    answer = client.post("/predict", json=body)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("instances[1]: the model's answer is NaN or infinite")
    assert "training data's scale" in detail and "\n" not in detail
    assert client.post("/predict", json={"instances": body["instances"][:1]}).status_code == 200
