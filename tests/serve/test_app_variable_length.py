"""The HTTP service for a model trained on variable-length sequences: each sample's sequence
is the list of its valid steps; the answer is the in-process one with those lengths."""

import asyncio
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import mlmm  # noqa: E402
from mlmm.serve.app import PredictResponse, create_app  # noqa: E402
from mlmm.testing import contract_dataset  # noqa: E402

MAX_STEPS = 12  # contract_dataset's sequence "s" is [12, 2]


@pytest.fixture(scope="module")
def trained():
    data = contract_dataset(n_samples=48)
    steps = np.random.default_rng(0).integers(3, MAX_STEPS + 1, size=48)
    data = replace(data, lengths={"s": steps})
    model = mlmm.create_method("zero-impute", data.specs, data.task, hidden=8)
    return mlmm.Trainer(max_epochs=1, seed=0, progress=False).fit(model, data)


@pytest.fixture(scope="module")
def client(trained):
    with TestClient(create_app({"v": trained})) as c:
        yield c


def _sequence(seed, steps, width=2):
    return np.random.default_rng(seed).normal(size=(steps, width)).round(4).tolist()


def _vector(seed, n):
    return np.random.default_rng(seed).normal(size=n).round(4).tolist()


def _in_process(trained, instances, on_empty="error"):
    """``trained.predict_proba`` on the same samples, padded with NaN, with their lengths."""
    n = len(instances)
    arrays = {m: np.full((n, *shape), np.nan) for m, shape in trained.modality_shapes.items()}
    steps = {m: np.zeros(n, dtype=np.int64) for m in trained.info["variable_length"]}
    for i, instance in enumerate(instances):
        for m, v in instance.items():
            if v is not None:
                arrays[m][i, : len(v)] = np.asarray(v)
                if m in steps:
                    steps[m][i] = len(v)
    return trained.predict_proba(arrays, lengths=steps, on_empty=on_empty)


def _probabilities(response):
    body = PredictResponse.model_validate(response.json())
    return np.array([[p.probabilities[k] for k in ("0", "1", "2")] for p in body.predictions])


def _post_at_once(app, bodies):
    """POST every body to ``/predict`` at the same time, inside the app's lifespan (so its
    micro-batching queue runs); the responses in the order of ``bodies``."""

    async def main():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await asyncio.gather(*(c.post("/predict", json=b) for b in bodies))

    return asyncio.run(main())


def test_mixed_lengths_in_one_request_answer_as_predict_with_lengths(client, trained):
    instances = [
        {"a": _vector(0, 6), "s": _sequence(1, 3)},
        {"s": _sequence(2, MAX_STEPS)},  # the longest the model takes
        {"b": _vector(3, 4), "s": _sequence(4, 1)},  # one step
        {"a": _vector(5, 6), "b": _vector(6, 4), "s": None},  # s absent
        {"s": _sequence(7, 8), "b": _vector(8, 4)},
    ]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.text
    got = _probabilities(response)
    np.testing.assert_array_equal(got, _in_process(trained, instances))
    used = [p["modalities"] for p in response.json()["predictions"]]
    assert used == [["a", "s"], ["s"], ["b", "s"], ["a", "b"], ["b", "s"]]
    # the length matters: the first 3 steps of a sequence do not answer as its 12
    long = _sequence(9, MAX_STEPS)
    short = client.post("/predict", json={"instances": [{"s": long[:3]}]})
    full = client.post("/predict", json={"instances": [{"s": long}]})
    assert not np.allclose(_probabilities(short), _probabilities(full))
    np.testing.assert_allclose(
        _probabilities(short), _in_process(trained, [{"s": long[:3]}]), rtol=1e-6, atol=1e-7
    )


def test_concurrent_requests_of_different_lengths_share_a_micro_batch(trained):
    app = create_app({"v": trained}, max_wait_ms=50)
    instances = [
        {"s": _sequence(i, 1 + i % MAX_STEPS), **({"a": _vector(50 + i, 6)} if i % 3 else {})}
        for i in range(24)
    ]

    responses = _post_at_once(app, [{"instances": [x]} for x in instances])
    assert all(r.status_code == 200 for r in responses), responses[0].text
    got = np.vstack([_probabilities(r) for r in responses])
    # other batch sizes than in-process: the same to float32 rounding, each to its request
    np.testing.assert_allclose(got, _in_process(trained, instances), rtol=1e-6, atol=1e-7)
    metrics = app.state.metrics
    assert metrics.batched_samples == 24 and metrics.batches < 24  # lengths mixed in a pass


def test_a_request_failing_in_a_micro_batch_fails_alone(trained, monkeypatch):
    from mlmm.errors import MlmmError
    from mlmm.serve.app import _Served

    answer = _Served._predict
    passes = []

    def predict(self, arrays, lengths):  # refuses any pass holding the marked sample
        passes.append(len(arrays["s"]))
        if (arrays["a"][:, 0] == 123.0).any():
            raise MlmmError("the marked sample")
        return answer(self, arrays, lengths)

    monkeypatch.setattr(_Served, "_predict", predict)
    app = create_app({"v": trained}, max_wait_ms=50)
    instances = [{"s": _sequence(i, 1 + i), "a": _vector(i, 6)} for i in range(8)]
    instances[5]["a"][0] = 123.0

    responses = _post_at_once(app, [{"instances": [x]} for x in instances])
    assert max(passes) > 1  # the marked sample did share a pass with others
    assert [r.status_code for r in responses] == [200] * 5 + [422] + [200] * 2
    assert responses[5].json()["detail"] == "instances: the marked sample"
    others = [x for i, x in enumerate(instances) if i != 5]
    got = np.vstack([_probabilities(r) for i, r in enumerate(responses) if i != 5])
    np.testing.assert_allclose(got, _in_process(trained, others), rtol=1e-6, atol=1e-7)


def test_two_sequences_and_a_vector_any_of_them_absent_share_micro_batches(two_sequences):
    trained, _ = two_sequences
    instances = [
        {"a": _vector(0, 5), "s": _sequence(1, 4), "u": _sequence(2, 7, 3)},
        {"u": _sequence(3, 1, 3)},  # s and a left out
        {"s": _sequence(4, MAX_STEPS), "u": None},  # u null: absent, length 0
        {"a": _vector(5, 5), "s": None, "u": None},
        {"s": _sequence(6, 2), "u": _sequence(7, 3, 3)},
        {"a": _vector(8, 5), "u": _sequence(9, 5, 3)},
    ]
    with TestClient(create_app({"two": trained})) as client:
        response = client.post("/predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        np.testing.assert_array_equal(_probabilities(response), _in_process(trained, instances))
        too_long = client.post("/predict", json={"instances": [{"u": _sequence(0, 8, 3)}]})
        assert too_long.json()["detail"].startswith("instances[0].u: 8 steps is over this")
    app = create_app({"two": trained}, max_wait_ms=50)
    requests = [instances[i % 6 : i % 6 + 1 + i % 3] for i in range(12)]  # 1 to 3 samples

    responses = _post_at_once(app, [{"instances": x} for x in requests])
    assert all(r.status_code == 200 for r in responses), responses[0].text
    assert app.state.metrics.batches < len(requests)  # requests of different sizes shared
    for r, x in zip(responses, requests, strict=True):  # each its own samples, in order
        np.testing.assert_allclose(_probabilities(r), _in_process(trained, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("instance", "phrase"),
    [
        (
            {"s": _sequence(0, MAX_STEPS + 1)},
            "instances[0].s: 13 steps is over this model's maximum of 12; send 1 to 12 steps",
        ),
        (  # too long and ragged: the steps are counted before any conversion
            {"s": [[0.0, 1.0]] * MAX_STEPS + [[0.0]] * 1000},
            "instances[0].s: 1012 steps is over this model's maximum of 12; send 1 to 12 steps",
        ),
        ({"s": []}, "instances[0].s: 0 steps; a present sequence needs at least 1"),
        ({"s": [[0.0, 1.0, 2.0]] * 4}, "instances[0].s: expected shape [steps, 2] with 1 <= "),
        ({"s": [0.0, 1.0]}, "instances[0].s: expected shape [steps, 2] with 1 <= steps <= 12"),
        (
            {"s": [[0.0, 1.0], [2.0]]},
            "instances[0].s: must be a nested list of numbers of shape [1..12, 2]",
        ),
        ({"s": [[0.0, 1e39]]}, "instances[0].s: holds values beyond float32's range"),
        (
            {"s": [[0.0, 1.0], [2.0, "3"]]},
            'instances[0].s[1][1]: expected a number, got the string "3"; send numbers unquoted',
        ),
        ({"s": [[True, 1.0]]}, "instances[0].s[0][0]: expected a number, got the boolean true"),
        ({"lengths": [3]}, "a request has no lengths field: send each variable-length"),
    ],
)
def test_a_bad_sequence_is_a_422_naming_the_field_and_the_fix(client, instance, phrase):
    body = {"instances": [{"a": _vector(0, 6)}, instance]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert phrase.replace("instances[0]", "instances[1]") in detail and "\n" not in detail


def test_a_lengths_field_is_refused_with_how_to_send_lengths(client):
    body = {"instances": [{"s": _sequence(0, 12)}], "lengths": [{"s": 3}]}
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("lengths: a request has no lengths field")


def test_the_model_route_says_which_sequences_take_any_length(client):
    (info,) = client.get("/model").json()["models"]
    flags = {m["name"]: m["variable_length"] for m in info["modalities"]}
    assert flags == {"a": False, "b": False, "s": True}


_steps = st.lists(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=3), min_size=0, max_size=MAX_STEPS + 2
)
# vectors of a's 6 entries, some of them whole numbers, strings or booleans (strings and
# booleans are refused, whole numbers are numbers)
_entries = st.floats(-1e3, 1e3) | st.integers(-5, 5) | st.booleans() | st.text(max_size=2)
_values = (
    _steps
    | st.none()
    | st.lists(st.floats(-1e3, 1e3), max_size=6)
    | st.lists(_entries, min_size=6, max_size=6)
    | st.text(max_size=2)
)


def _has_a_string_or_boolean(value):
    if isinstance(value, list):
        return any(_has_a_string_or_boolean(v) for v in value)
    return isinstance(value, str | bool)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    instances=st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "s"]), _values, max_size=3),
        min_size=1,
        max_size=3,
    )
)
def test_any_sequence_gets_an_answer_or_a_422_never_a_5xx(client, trained, instances):
    response = client.post("/predict", json={"instances": instances, "on_empty": "prior"})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:  # then every sequence was 1 to 12 steps of 2 numbers
        assert not any(_has_a_string_or_boolean(list(i.values())) for i in instances)
        np.testing.assert_allclose(
            _probabilities(response), _in_process(trained, instances, "prior"), rtol=1e-6, atol=1e-7
        )
    else:
        assert response.json()["detail"].startswith("instances[")
