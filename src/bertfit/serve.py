"""HTTP serving of a trained classifier: ``create_app(classifier) -> FastAPI``, with micro-batched prediction.

Routes: ``POST /predict`` (``{"texts": [...]}`` -> label, score and class probabilities per text), ``GET /health``,
``GET /info`` (labels, base model, max_length, long-text rule, training metrics), ``GET /`` (a try-it page) and
``/docs`` (OpenAPI).

Concurrent requests share forward passes: a :class:`MicroBatcher` collects the texts of requests arriving within
``max_wait_ms`` (up to ``max_batch_size`` texts), runs one batched ``predict_proba`` in a worker thread (the event
loop keeps accepting requests meanwhile) and hands each caller its rows. ``max_batch_size=1`` serves one request
per forward pass, the baseline of ``benchmarks/serve_load.py``.

Clients get 4xx errors naming the limit they broke, and never a file-system path or a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .config import PRECISIONS
from .exceptions import ConfigError, MissingDependencyError
from .predictor import Predictor

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field, StrictStr
except ImportError:  # pragma: no cover - exercised by a test that hides fastapi
    raise MissingDependencyError.for_extra("bertfit serve", "serve", "fastapi") from None

__all__ = ["create_app", "run_server", "MicroBatcher"]

logger = logging.getLogger(__name__)

PAGE_FILE = "serve_page.html"


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["see you at 7"]}]})
    texts: list[StrictStr] = Field(min_length=1, description="Texts to classify; GET /info lists the limits.")


class Prediction(BaseModel):
    label: str | None = Field(
        default=None,
        description="The predicted label (using the model's saved threshold, if any); single-label models.",
    )
    score: float | None = Field(default=None, description="Probability of that label; single-label models.")
    labels: list[str] | None = Field(
        default=None,
        description="Multi-label models: the predicted label set, each label whose probability reaches its saved "
        "threshold (empty when none does).",
    )
    probabilities: dict[str, float] = Field(description="Probability of every label, in label order.")


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class MicroBatcher:
    """Groups the texts of concurrent requests into batched calls of ``predict_fn``, one call at a time.

    Args:
        predict_fn: Texts -> array of shape ``(n_texts, n_labels)``; runs in a worker thread.
        max_batch_size: Most texts per call (a single larger request still runs whole, in one call).
        max_wait_ms: How long the first request of a batch waits for others to join it.

    >>> batcher = MicroBatcher(clf.predict_proba, max_batch_size=64, max_wait_ms=5)  # doctest: +SKIP
    >>> probs = await batcher.predict(["free prize, call now"])  # doctest: +SKIP
    """

    def __init__(self, predict_fn: Callable[[list[str]], np.ndarray], max_batch_size: int, max_wait_ms: float):
        self.predict_fn = predict_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.calls = 0  # forward passes run so far
        self.texts = 0  # texts predicted so far
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        """Start the worker; call from the running event loop."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bertfit-predict")
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker and its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities of ``texts``, computed in a batch shared with concurrent callers."""
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry = None  # a request that did not fit into the previous batch
        while True:
            first = carry or await self._queue.get()
            batch, size, carry = [first], len(first[0]), None
            deadline = loop.time() + self.max_wait
            while size < self.max_batch_size:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    try:
                        item = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
                    except asyncio.TimeoutError:
                        break
                if size + len(item[0]) > self.max_batch_size:
                    carry = item
                    break
                batch.append(item)
                size += len(item[0])
            await self._answer(loop, batch)

    async def _answer(self, loop, batch: list[tuple[list[str], asyncio.Future]]) -> None:
        texts = [text for item_texts, _ in batch for text in item_texts]
        try:
            probs = await loop.run_in_executor(self._executor, self.predict_fn, texts)  # (n_texts, n_labels)
        except Exception as err:  # handed to each caller, whose request then fails with a 500
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        self.calls += 1
        self.texts += len(texts)
        start = 0
        for item_texts, future in batch:
            if not future.done():  # a caller that disconnected has a cancelled future
                future.set_result(probs[start : start + len(item_texts)])
            start += len(item_texts)


def create_app(
    classifier: Predictor,
    *,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    max_texts: int = 256,
    max_chars: int = 10_000,
    max_body_bytes: int = 4_000_000,
    precision: str = "fp32",
) -> FastAPI:
    """A FastAPI app that serves ``classifier``.

    Args:
        classifier: A fitted classifier (e.g. ``load_classifier(DIR)``: a model directory or an ONNX export).
        max_batch_size: Most texts per forward pass; 1 turns micro-batching off.
        max_wait_ms: How long a request waits for others to share its forward pass.
        max_texts: Most texts per request (more: 422).
        max_chars: Most characters per text (more: 422).
        max_body_bytes: Largest request body (more: 413).
        precision: ``fp32`` (probabilities exactly as ``predict_proba``), ``bf16``/``fp16`` autocast, or ``auto``
            (bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs: several times the throughput of fp32 on large
            batches, probabilities within about 1e-2).

    Returns:
        The app; run it with uvicorn, or with :func:`run_server`.

    >>> app = create_app(TextClassifier.from_pretrained("runs/spam"))  # doctest: +SKIP
    """
    labels, card = classifier.labels, classifier.card
    batcher = MicroBatcher(_predict_fn(classifier, precision), max_batch_size, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="bertfit",
        version=__version__,
        description=f"Text classification with labels {labels}. Try it at `/`. Limits per request: {max_texts} "
        f"texts, {max_chars} characters per text, {max_body_bytes} bytes of body.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True)
    async def predict(request: PredictRequest) -> dict[str, Any]:
        """Label, score and class probabilities of each text (multi-label models: the label set and probabilities)."""
        texts = request.texts
        _check_texts(texts, max_texts, max_chars)
        probs = await batcher.predict(texts)
        return {"predictions": [card.decision.response(row) for row in probs]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and how many texts and forward passes were served."""
        return {"status": "ok", "texts": batcher.texts, "forward_passes": batcher.calls}

    @app.get("/info")
    async def model_info() -> dict[str, Any]:
        """Labels, base model, max_length, long-text rule, thresholds and the training metrics of the served model."""
        limits = {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": max_body_bytes}
        return _model_info(classifier, limits)

    page = resources.files("bertfit").joinpath(PAGE_FILE).read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


def run_server(classifier: Predictor, host: str = "127.0.0.1", port: int = 8000, **app_options: Any) -> None:
    """Serve ``classifier`` with uvicorn until interrupted; ``app_options`` go to :func:`create_app`.

    Raises:
        MissingDependencyError: uvicorn is not installed.
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError.for_extra("bertfit serve", "serve", "uvicorn") from None
    uvicorn.run(create_app(classifier, **app_options), host=host, port=port, log_level="info")


def _predict_fn(classifier: Predictor, precision: str) -> Callable[[list[str]], np.ndarray]:
    """``predict_proba`` of ``classifier`` predicting in ``precision`` (sharing its weights)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return classifier.with_precision(precision).predict_proba


def _check_texts(texts: list[str], max_texts: int, max_chars: int) -> None:
    if len(texts) > max_texts:
        raise HTTPException(422, f"at most {max_texts} texts per request, got {len(texts)}; split the request")
    too_long = next((i for i, text in enumerate(texts) if len(text) > max_chars), None)
    if too_long is not None:
        raise HTTPException(
            422, f"texts[{too_long}] has {len(texts[too_long])} characters, over the limit of {max_chars}"
        )


def _model_info(classifier: Predictor, limits: dict[str, int]) -> dict[str, Any]:
    card = classifier.card
    return {
        "labels": card.labels,
        "multi_label": card.multi_label,
        "base_model": _public_name(card.base_model),
        "max_length": card.max_length,
        "long_text": card.windowing.to_info(),
        "positive_label": card.positive_label,
        "threshold": card.decision.threshold,
        "thresholds": card.decision.thresholds,
        "metrics": classifier.metrics,
        "limits": limits,
        "bertfit_version": __version__,
    }


def _public_name(name: str | None) -> str | None:
    """A base model's hub id, or only the last part of a local directory: clients never see server paths."""
    if name and (Path(name).is_absolute() or Path(name).exists()):
        return Path(name).name
    return name


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Pydantic's error list without the echoed input (which may be megabytes of text).
        errors = [
            {"loc": ".".join(str(part) for part in err["loc"] if part != "body"), "msg": err["msg"]}
            for err in exc.errors()
        ]
        status = 400 if any(err["type"] == "json_invalid" for err in exc.errors()) else 422
        message = "malformed JSON" if status == 400 else 'expected {"texts": ["a text", ...]}'
        return JSONResponse({"detail": message, "errors": errors}, status_code=status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error; the server log has the details"}, status_code=500)


class _BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, whether declared or streamed."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            await JSONResponse({"detail": "invalid Content-Length header"}, status_code=400)(scope, receive, send)
            return
        too_large = JSONResponse(
            {"detail": f"request body over the limit of {self.max_bytes} bytes; send fewer or shorter texts"},
            status_code=413,
        )
        if int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await too_large(scope, receive, send)
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)
