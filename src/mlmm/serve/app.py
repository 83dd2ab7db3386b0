"""The HTTP service: ``create_app(models)`` answers ``POST /predict`` from any subset of modalities.

One FastAPI app per process, built by :func:`create_app` from already loaded
:class:`~mlmm.TrainedModel` objects (loaded once, never global): ``POST /predict``,
``GET /health``, ``GET /model``, ``GET /metrics`` (Prometheus text format). Every bad input
is a 4xx whose ``detail`` names the field; a 5xx is a bug. Numbers are strict: a string or
boolean where a number goes is refused, never converted. The body is read and checked by
:mod:`mlmm.serve.request`, which ``mlmm predict --input x.json`` uses too.

A model trained on variable-length sequences (``info["variable_length"]``) takes each
sample's sequence as the list of its valid steps, 1 to the model's maximum: the list's length
is the sample's length (a JSON list carries its own, so there is no second field to disagree
with it). The server pads on arrival and carries the lengths through the queue, so samples of
different lengths share one forward pass.

Concurrent requests are micro-batched: a request's samples join a per-model queue, and one
worker answers what is queued (up to ``max_batch_rows`` samples) with one forward pass, in a
worker thread so the event loop keeps accepting requests meanwhile. A request that finds the
queue idle is answered at once; when others are already waiting, the worker takes them all
and waits at most ``max_wait_ms`` for more. Requests arriving during a forward pass queue up
for the next one, so under load many one-sample passes become a few large ones. A pass that
fails is run again request by request, so one request's error fails that request only.

Needs the ``serve`` extra (``pip install 'mlmm[serve]'``: FastAPI and uvicorn).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlmm.errors import MlmmError
from mlmm.eval.protocol import subset_name
from mlmm.serve.predict import NO_MODALITY, NOT_FINITE_FIX, not_finite_rows, score_metric
from mlmm.serve.request import (
    UNPARSABLE_BODY,
    PredictRequest,
    RequestError,
    pick_model,
    request_arrays,
    validation_error,
)
from mlmm.train.trained import TrainedModel

#: Seconds a request body may stall (nothing received) before the request is answered 408: a
#: client that never sends the body it announced would otherwise hold its request, and the
#: server's shutdown, until the graceful-shutdown timeout cancelled it with a traceback.
BODY_IDLE_SECONDS = 10.0
#: Latency histogram bucket bounds, in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROUTES = ("/predict", "/health", "/model", "/metrics")


# ---------------------------------------------------------------------- request / response
class Prediction(BaseModel):
    """The answer for one sample."""

    prediction: str | int | float | bool = Field(
        description="The class label (as seen in training) or the predicted value."
    )
    probabilities: dict[str, float] | None = Field(
        None, description="Class label -> probability (classification)."
    )
    modalities: list[str] = Field(description="The modalities this answer used.")
    validation_score: float | None = Field(
        None,
        description="The model's validation score with exactly these modalities present "
        "(see validation_metric): how far to trust this answer. Null when not stored.",
    )
    validation_metric: str


class PredictResponse(BaseModel):
    """``POST /predict`` answer: one prediction per instance, in order."""

    model: str
    predictions: list[Prediction]


class ModalityInfo(BaseModel):
    name: str
    kind: str
    shape: list[int]
    variable_length: bool = Field(
        False,
        description="A sequence of any length from 1 to shape[0] steps: send only its valid "
        "steps (no padding).",
    )


class SubsetScore(BaseModel):
    modalities: str
    metrics: dict[str, float]


class ModelInfo(BaseModel):
    """What a served model expects and how well it did per modality subset."""

    name: str
    method: str
    task: str
    classes: list[str | int | float | bool] | None
    modalities: list[ModalityInfo]
    n_parameters: int
    library_version: str = Field(description="The mlmm serving it.")
    validation: list[SubsetScore]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]


class ErrorResponse(BaseModel):
    detail: str


# ---------------------------------------------------------------------- metrics
@dataclass
class ServiceMetrics:
    """Counters for ``/metrics`` (Prometheus text exposition format 0.0.4)."""

    requests: Counter = field(default_factory=Counter)  # (route, status) -> n
    errors: Counter = field(default_factory=Counter)  # (route, status) -> n
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    latency_count: int = 0
    patterns: Counter = field(default_factory=Counter)  # (model, subset) -> n
    batches: int = 0
    batched_samples: int = 0

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests[(route, status)] += 1
        if status >= 400:
            self.errors[(route, status)] += 1
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                break
        else:
            self.buckets[-1] += 1

    def render(self) -> str:
        def esc(value: Any) -> str:
            return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        out = [
            "# HELP mlmm_requests_total HTTP requests by route and status.",
            "# TYPE mlmm_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'mlmm_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP mlmm_errors_total HTTP requests answered with a 4xx or 5xx.",
            "# TYPE mlmm_errors_total counter",
        ]
        for (route, status), n in sorted(self.errors.items()):
            out.append(f'mlmm_errors_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP mlmm_request_duration_seconds Time from request to response.",
            "# TYPE mlmm_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, n in zip((*LATENCY_BUCKETS, math.inf), self.buckets, strict=True):
            cumulative += n
            le = "+Inf" if bound == math.inf else repr(bound)
            out.append(f'mlmm_request_duration_seconds_bucket{{le="{le}"}} {cumulative}')
        out.append(f"mlmm_request_duration_seconds_sum {self.latency_sum!r}")
        out.append(f"mlmm_request_duration_seconds_count {self.latency_count}")
        out += [
            "# HELP mlmm_patterns_total Samples answered, by model and modalities present.",
            "# TYPE mlmm_patterns_total counter",
        ]
        for (model, pattern), n in sorted(self.patterns.items()):
            out.append(f'mlmm_patterns_total{{model="{esc(model)}",pattern="{esc(pattern)}"}} {n}')
        out += [
            "# HELP mlmm_batches_total Forward passes run (a micro-batch is one).",
            "# TYPE mlmm_batches_total counter",
            f"mlmm_batches_total {self.batches}",
            "# HELP mlmm_batched_samples_total Samples answered by those forward passes.",
            "# TYPE mlmm_batched_samples_total counter",
            f"mlmm_batched_samples_total {self.batched_samples}",
        ]
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- the model side
class _Served:
    """One served model: its input checks, its micro-batch queue and worker."""

    def __init__(self, name: str, trained: TrainedModel, metrics: ServiceMetrics) -> None:
        self.name = name
        self.trained = trained
        self.metrics = metrics
        self.shapes = trained.modality_shapes
        self.names = tuple(self.shapes)
        self.metric = score_metric(trained)
        scores = trained.validation_scores()
        self.scores = {s: m.get(self.metric) for s, m in scores.items()}
        if trained.task.is_multilabel:  # a response holds one label per sample
            raise MlmmError(
                f"model {name!r} is multilabel, which mlmm serve does not answer (one label per "
                f"sample); use mlmm predict, whose table has every label's probability"
            )
        # sequences sent with their valid steps only; padded on arrival, lengths recorded
        self.variable = tuple(trained.info.get("variable_length") or ())
        self.labels = trained.classes_.tolist() if trained.task.is_classification else None
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None

    # -------------------------------------------------------- answering
    async def _forward(
        self, arrays: dict[str, np.ndarray], lengths: dict[str, np.ndarray]
    ) -> np.ndarray:
        """One forward pass in a worker thread (the event loop keeps serving meanwhile)."""
        # empty samples were refused in arrays() unless on_empty="prior" was asked for
        out = await asyncio.to_thread(self._predict, arrays, lengths)
        self.metrics.batches += 1  # counted on the event loop, never from two threads
        self.metrics.batched_samples += len(out)
        return out

    def _predict(self, arrays: dict[str, np.ndarray], lengths: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():  # no autograd bookkeeping: ~30% less per forward pass
            # a full-length model takes no lengths= at all (an empty dict is refused too)
            return self.trained.predict_raw(arrays, "prior", lengths if self.variable else None)

    async def answer(
        self,
        arrays: dict[str, np.ndarray],
        lengths: dict[str, np.ndarray],
        n: int,
        batching: bool,
    ) -> np.ndarray:
        if not batching or self.queue is None:
            return await self._forward(arrays, lengths)
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((arrays, lengths, n, future))
        return await future

    async def run(self, max_wait: float, max_rows: int) -> None:
        """The micro-batch worker: collect for ``max_wait`` seconds, answer, repeat; a ``None``
        in the queue (shutdown) ends it after the samples queued before it are answered."""
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self.queue.get()
            if first is None:
                return
            items = [first]
            rows = first[2]
            deadline = loop.time() + max_wait
            while rows < max_rows:
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if len(items) == 1 or left <= 0:  # alone: answer at once, never wait
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), left)
                    except asyncio.TimeoutError:  # TimeoutError from Python 3.11
                        break
                if item is None:
                    stop = True
                    break
                items.append(item)
                rows += item[2]
            await self._answer_batch(items)

    async def _answer_batch(self, items: list[tuple]) -> None:
        """One forward pass for the queued ``(arrays, lengths, n, future)`` items, resolving
        every future. When the pass fails, each request is answered alone, so that one
        request's error fails that request only."""
        try:
            # samples of different lengths share the pass: each row keeps its own length
            merged = {m: np.concatenate([it[0][m] for it in items]) for m in self.names}
            steps = {m: np.concatenate([it[1][m] for it in items]) for m in self.variable}
            out = await self._forward(merged, steps)
        except Exception as err:  # noqa: BLE001 - handed to the request that raised it
            if len(items) > 1:
                for item in items:
                    if not item[3].done():
                        await self._answer_batch([item])
            elif not items[0][3].done():
                items[0][3].set_exception(err)
            return
        start = 0
        for _, _, n, future in items:
            if not future.done():
                future.set_result(out[start : start + n])
            start += n

    def response(self, raw: np.ndarray, present: np.ndarray) -> PredictResponse:
        predictions = []
        for row, mask in zip(raw, present, strict=True):
            used = [m for m, p in zip(self.names, mask, strict=True) if p]
            pattern = subset_name(used) or NO_MODALITY
            self.metrics.patterns[(self.name, pattern)] += 1
            score = self.scores.get(pattern)
            if self.labels is not None:
                label = self.labels[int(row.argmax())]
                probabilities = {str(k): float(p) for k, p in zip(self.labels, row, strict=True)}
            else:
                label, probabilities = float(row), None
            predictions.append(
                Prediction(
                    prediction=label,
                    probabilities=probabilities,
                    modalities=used,
                    validation_score=None if score is None or math.isnan(score) else score,
                    validation_metric=self.metric,
                )
            )
        return PredictResponse(model=self.name, predictions=predictions)

    def info(self) -> ModelInfo:
        trained = self.trained
        return ModelInfo(
            name=self.name,
            method=trained.method,
            task=trained.task.kind,
            classes=self.labels,
            modalities=[
                ModalityInfo(
                    name=s.name,
                    kind=s.kind,
                    shape=list(s.shape),
                    variable_length=s.name in self.variable,
                )
                for s in trained.specs
            ],
            n_parameters=trained.n_parameters(),
            library_version=_version(),
            validation=[
                SubsetScore(modalities=s, metrics={k: v for k, v in m.items() if math.isfinite(v)})
                for s, m in trained.validation_scores().items()
            ],
        )


def _version() -> str:
    import mlmm

    return mlmm.__version__


# ---------------------------------------------------------------------- body guard
class _BodyGuard:
    """ASGI middleware: JSON content type and a size bound on request bodies; timing.

    Runs before FastAPI reads the body, so an oversized payload is refused (413) after at
    most ``max_body_bytes`` are read, a body that stalls for :data:`BODY_IDLE_SECONDS` is a
    408, and a wrong content type is a 415. Every request's
    route, status and latency go to the metrics.
    """

    def __init__(self, app: Any, max_body_bytes: int, metrics: ServiceMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        path = scope.get("path", "")
        route = path if path in _ROUTES else "other"
        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                await self._guarded(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(route, status[0], time.perf_counter() - start)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            shown = content_type.decode("latin-1") or "none"
            await _reply(send, 415, f"content-type: must be application/json, got {shown}")
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _reply(send, 413, self._too_large(int(length)))
            return
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), BODY_IDLE_SECONDS)
            except asyncio.TimeoutError:  # TimeoutError from Python 3.11
                await _reply(
                    send,
                    408,
                    f"body: nothing received for {BODY_IDLE_SECONDS:g} s after {len(body):,} "
                    f"byte(s); send the whole body without pausing",
                )
                return
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _reply(send, 413, self._too_large(len(body)))
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return (
            f"body: {size:,} bytes is over the {self.max_body_bytes:,}-byte limit; send fewer "
            f"instances per request (or start the server with a larger --max-body-bytes)"
        )


async def _reply(send: Any, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


# ---------------------------------------------------------------------- the app
def create_app(
    models: Mapping[str, TrainedModel],
    *,
    on_empty: str = "error",
    max_body_bytes: int = 1 << 20,
    max_instances: int = 1024,
    micro_batch: bool = True,
    max_wait_ms: float = 2.0,
    max_batch_rows: int = 256,
) -> FastAPI:
    """The HTTP service answering from ``models`` (already loaded, used as they are).

    Parameters
    ----------
    models : dict of str to TrainedModel
        Served models by name (``POST /predict`` picks one with ``"model"``; it may be left
        out when only one is served).
    on_empty : {"error", "prior"}, default "error"
        Default for samples with no modality: a 422, or the training prior. A request may
        override it.
    max_body_bytes : int, default 1 MiB
        Larger request bodies are refused with a 413 before they are read in full.
    max_instances : int, default 1024
        Most samples in one request (more is a 422).
    micro_batch : bool, default True
        Merge concurrent requests into one forward pass (see the module docstring).
    max_wait_ms : float, default 2.0
        How long the micro-batch worker waits for more requests when several are already
        queued (a request alone is answered at once).
    max_batch_rows : int, default 256
        Most samples in one micro-batch.

    Returns
    -------
    FastAPI
        Serve it with uvicorn (``mlmm serve``), or test it with ``fastapi.testclient``.
    """
    if not models:
        raise MlmmError("create_app needs at least one model; pass {name: TrainedModel}")
    if on_empty not in ("error", "prior"):
        raise MlmmError(f"on_empty must be 'error' or 'prior', got {on_empty!r}")
    for name, value, low in (
        ("max_body_bytes", max_body_bytes, 1),
        ("max_instances", max_instances, 1),
        ("max_batch_rows", max_batch_rows, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise MlmmError(f"{name} must be an integer >= {low}, got {value!r}")
    if not 0 <= max_wait_ms <= 1000:
        raise MlmmError(f"max_wait_ms must be in [0, 1000], got {max_wait_ms!r}")
    metrics = ServiceMetrics()
    served = {str(name): _Served(str(name), trained, metrics) for name, trained in models.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if micro_batch:
            for model in served.values():
                model.queue = asyncio.Queue()
                model.worker = asyncio.create_task(model.run(max_wait_ms / 1000, max_batch_rows))
        yield
        for model in served.values():  # shutdown: answer what is queued, then stop
            if model.worker is not None and model.queue is not None:
                await model.queue.put(None)
                await model.worker
                model.queue = model.worker = None

    app = FastAPI(
        title="mlmm",
        summary="Predictions from any subset of modalities.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.add_middleware(_BodyGuard, max_body_bytes=max_body_bytes, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(list(exc.errors()))
        return JSONResponse({"detail": err.detail}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        if exc.status_code == 400 and not detail.startswith("body"):
            detail = UNPARSABLE_BODY
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestError)
    async def _bad(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    errors = {
        400: {"model": ErrorResponse, "description": "Malformed JSON, or an empty body."},
        413: {"model": ErrorResponse, "description": "Body over the size limit."},
        415: {"model": ErrorResponse, "description": "Not application/json."},
        422: {"model": ErrorResponse, "description": "An input the model cannot take."},
    }

    @app.post("/predict", response_model=PredictResponse, responses=errors)
    async def predict(request: PredictRequest) -> Response:
        """Predict for one sample (a list of one) or a batch, from any subset of modalities."""
        model = served[pick_model(request.model, list(served))]
        if len(request.instances) > max_instances:
            raise RequestError(
                f"instances: {len(request.instances)} samples is over the limit of "
                f"{max_instances} per request; split the batch"
            )
        arrays, present, lengths = request_arrays(
            model.shapes, model.variable, request.instances, request.on_empty or on_empty
        )
        try:
            raw = await model.answer(arrays, lengths, len(present), micro_batch)
        except MlmmError as err:
            raise RequestError(f"instances: {err}") from None
        bad = not_finite_rows(raw)
        if len(bad):  # argmax would call it the first class; JSON would carry null
            raise RequestError(
                f"instances[{int(bad[0])}]: the model's answer is NaN or infinite: {NOT_FINITE_FIX}"
            )
        # serialised here in one step: FastAPI would otherwise re-validate the response model
        body = model.response(raw, present).model_dump_json()
        return Response(body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health() -> Health:
        """Liveness: the service is up and its models are loaded."""
        return Health(status="ok", models=sorted(served))

    @app.get("/model", response_model=ModelsResponse)
    async def model_info() -> ModelsResponse:
        """The served models: modalities and shapes, classes, per-subset validation scores."""
        return ModelsResponse(models=[m.info() for m in served.values()])

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> PlainTextResponse:
        """Prometheus text format: requests, errors, latency histogram, patterns seen."""
        return PlainTextResponse(
            metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return app
