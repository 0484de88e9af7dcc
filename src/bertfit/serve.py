"""HTTP serving of a trained classifier: ``create_app(classifier) -> FastAPI``, with micro-batched prediction.

Routes: ``POST /predict`` (``{"texts": [...]}`` -> label, score and class probabilities per text), ``GET /health``
(alive: 200 while the process runs), ``GET /ready`` (200 while the model is loaded and the queue has room, else 503),
``GET /info`` (labels, base model, max_length, long-text rule, training metrics, limits), ``POST /explain``
(``{"text": "..."}`` -> per-word attributions for the predicted or a given label, by integrated gradients: see
:mod:`bertfit.explain`), ``GET /`` (a try-it page, whose "explain" toggle highlights the words), and ``/docs`` /
``/redoc`` (OpenAPI pages whose scripts come from the fastapi-offline package: no CDN, no network).

Concurrent requests share forward passes: a :class:`MicroBatcher` collects the texts of requests arriving within
``max_wait_ms`` (up to ``max_batch_size`` texts), runs one batched ``predict_proba`` in a worker thread (the event
loop keeps accepting requests meanwhile) and hands each caller its rows. ``max_batch_size=1`` serves one request
per forward pass, the baseline of ``benchmarks/serve_load.py``.

Any text a client can put in valid JSON gets a 200 or a 4xx; a 500 means the model itself failed:

- *Sanitized*: lone UTF-16 surrogates (``"\\ud800"`` is valid JSON but not Unicode, and tokenizers refuse it) are
  replaced with U+FFFD, as a UTF-8 decoder does with a broken byte, and the text is classified.
- *Refused* with 422 naming the index: texts over ``max_chars``, and texts with nothing to classify (empty, or only
  whitespace and invisible characters such as NUL or zero-width spaces).
- A batch that fails is re-run request by request, so one request's texts never fail the others sharing its batch.

Under load the server sheds work instead of queueing it without bound: past ``max_queue`` waiting texts
``/predict`` answers 503 with ``Retry-After``, and a request not answered within ``timeout`` seconds gets 504 (its
texts leave the queue if their forward pass had not started). ``/explain`` takes one text of at most ``max_chars``
and runs one explanation at a time (503 with ``Retry-After`` while one runs, 504 past ``timeout``, 501 with the pip
line when captum is missing or the model is an ONNX export); Captum hooks the embedding layer, so predictions wait
while an explanation runs. With ``api_key``, ``/predict``, ``/explain`` and ``/info`` need
``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (401 otherwise). ``allowed_hosts`` (by default the loopback
names) refuses requests addressed to any other Host with 400: a web page cannot reach a server on localhost by
rebinding its own domain to 127.0.0.1.

Clients get errors naming the limit they broke and the fix, and never a file-system path or a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import hmac
import ipaddress
import logging
import math
import re
import signal
import socket
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from ._version import __version__
from .config import PRECISIONS
from .exceptions import ConfigError, MissingDependencyError
from .explain import explain, explanation_unavailable
from .predictor import Predictor

try:
    from fastapi import FastAPI, HTTPException, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.security import APIKeyHeader, HTTPBearer
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, create_model
except ImportError:  # pragma: no cover - exercised by a test that hides fastapi
    raise MissingDependencyError.for_extra("bertfit serve", "serve", "fastapi") from None
try:
    from fastapi_offline import FastAPIOffline
except ImportError:  # pragma: no cover
    raise MissingDependencyError.for_extra("bertfit serve", "serve", "fastapi-offline") from None

__all__ = ["create_app", "run_server", "check_address", "MicroBatcher", "QueueFull", "LOCAL_HOSTS"]

logger = logging.getLogger(__name__)

PAGE_FILE = "serve_page.html"
# The Host header values of a server bound to the loopback interface, whatever its port.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# What api_key guards; /health, /ready, the page and the docs stay open.
PROTECTED_PATHS = ("/predict", "/info", "/explain")
_SURROGATES = re.compile("[\ud800-\udfff]")
# A character that is not whitespace, a control character or an invisible format character (NUL, zero-width space,
# BOM, bidi marks): a text needs one to be classified. Written with escapes both Python and JSON Schema (ECMA-262)
# read alike, so the server checks exactly the pattern its OpenAPI schema publishes.
VISIBLE_PATTERN = (
    r"[^\x00-\x20\x7f-\xa0\xad\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u2064\u2066-\u206f\u3000\ufeff"
    r"\ufff9-\ufffb]"
)
_VISIBLE = re.compile(VISIBLE_PATTERN)


def _request_model(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The body of POST /predict, with this app's limits in its JSON schema (:func:`_clean_texts` checks them, with
    messages that name the text at fault)."""

    def limits(schema: dict[str, Any]) -> None:
        schema["maxItems"] = max_texts
        schema["items"].update(maxLength=max_chars, pattern=VISIBLE_PATTERN)

    texts = Field(
        min_length=1,
        description="Texts to classify, each with a visible character; GET /info lists the limits.",
        json_schema_extra=limits,
    )
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"texts": ["see you at 7"]}]})
    return create_model("PredictRequest", __config__=config, texts=(list[StrictStr], texts))


def _whole_number(value: Any) -> Any:
    """An integer as JSON Schema reads one: 106 or 106.0, never "106" or true (pydantic's lax int takes those, and
    its strict int refuses 106.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


def _explain_request_model(labels: Sequence[str], max_chars: int) -> type[BaseModel]:
    """The body of POST /explain: one text (checked by :func:`_clean_texts`), a label of this model, the steps."""
    text = Field(
        description="The text to explain, with a visible character; GET /info lists the limits.",
        json_schema_extra={"maxLength": max_chars, "pattern": VISIBLE_PATTERN},
    )
    label = Field(default=None, description="The label to explain; default: the predicted (most probable) one.")
    steps = Field(default=32, ge=1, le=MAX_SERVED_STEPS, description="Integration points; more: slower, exacter.")
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": "see you at 7"}]})
    return create_model(
        "ExplainRequest",
        __config__=config,
        text=(StrictStr, text),
        label=(Literal[tuple(labels)] | None, label),
        steps=(Annotated[int, BeforeValidator(_whole_number)], steps),
    )


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


class FieldError(BaseModel):
    loc: str = Field(description="Where in the body, e.g. 'texts.1'.")
    msg: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong, and how to fix it.")
    errors: list[FieldError] | None = Field(default=None, description="Schema violations (422), one per field.")


class Health(BaseModel):
    status: str = Field(description="'ok' while the process runs.")
    texts: int = Field(description="Texts predicted so far.")
    forward_passes: int = Field(description="Batched forward passes run so far.")


class Readiness(BaseModel):
    status: str = Field(description="'ready'; 'busy' (queue full) or 'stopped' (no model worker) with a 503.")
    queued_texts: int = Field(description="Texts waiting for a forward pass.")
    max_queue: int = Field(description="Most texts that may wait; /predict answers 503 beyond it.")


class WordScore(BaseModel):
    word: str = Field(description="text[start:end], offsets in Unicode code points.")
    start: int
    end: int
    score: float = Field(description="Change of the label's probability this word accounts for.")
    weight: float = Field(description="score / the largest absolute score: from -1 to 1.")


class ExplainResponse(BaseModel):
    text: str = Field(description="The text explained (lone surrogates replaced with U+FFFD); offsets index it.")
    label: str
    predicted: bool = Field(description="Whether the model predicts that label for the text.")
    probability: float
    baseline_probability: float = Field(description="The label's probability with every word replaced by [PAD].")
    convergence_delta: float = Field(description="sum(scores) - (probability - baseline_probability).")
    steps: int
    windows: int
    truncated: bool = Field(description="The model saw only the first max_length tokens; later words have no score.")
    words: list[WordScore]


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed JSON, a bad Content-Length or a Host not allowed."},
    413: {"model": ErrorResponse, "description": "The body is over the size limit."},
    422: {"model": ErrorResponse, "description": "Not {'texts': [...]}, or a text over a limit or empty."},
    500: {"model": ErrorResponse, "description": "The model failed; the server log has the details."},
    503: {"model": ErrorResponse, "description": "The queue is full.", "headers": _RETRY_AFTER},
    504: {"model": ErrorResponse, "description": "The prediction did not finish within the timeout."},
}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": ErrorResponse, "description": "No or a wrong key."}}
_EXPLAIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_PREDICT_ERRORS,
    422: {"model": ErrorResponse, "description": "A bad body, a text over the limit or empty, an unknown label."},
    501: {"model": ErrorResponse, "description": "captum is not installed, or the model is an ONNX export."},
    503: {"model": ErrorResponse, "description": "An explanation is already running.", "headers": _RETRY_AFTER},
    504: {"model": ErrorResponse, "description": "The explanation did not finish within the timeout."},
}
MAX_SERVED_STEPS = 128  # an explanation costs about 2 x steps forward passes per window


class QueueFull(Exception):
    """The micro-batcher's queue has no room for a request's texts; ``retry_after``: seconds to wait."""

    def __init__(self, queued: int, max_queue: int, retry_after: int):
        super().__init__(f"{queued} texts are waiting, and at most {max_queue} may")
        self.retry_after = retry_after


@dataclass(eq=False)
class _Job:
    texts: list[str]
    future: asyncio.Future
    queued_at: float  # event-loop time


class MicroBatcher:
    """Groups the texts of concurrent requests into batched calls of ``predict_fn``, one call at a time.

    Args:
        predict_fn: Texts -> array of shape ``(n_texts, n_labels)``; runs in a worker thread.
        max_batch_size: Most texts per call (a single larger request still runs whole, in one call).
        max_wait_ms: How long the oldest waiting request waits for others to join its batch.
        max_queue: Most texts waiting for a forward pass; :meth:`predict` raises :class:`QueueFull` beyond it.

    >>> batcher = MicroBatcher(clf.predict_proba, max_batch_size=64, max_wait_ms=5)  # doctest: +SKIP
    >>> probs = await batcher.predict(["free prize, call now"])  # doctest: +SKIP
    """

    def __init__(
        self,
        predict_fn: Callable[[list[str]], np.ndarray],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int = 1024,
    ):
        self.predict_fn = predict_fn
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.calls = 0  # forward passes run so far
        self.texts = 0  # texts predicted so far
        self.queued = 0  # texts waiting for a forward pass
        self._busy = 0.0  # seconds spent in successful forward passes
        self._pending: deque[_Job] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        """Whether the worker is started and alive."""
        return self._task is not None and not self._task.done()

    @property
    def full(self) -> bool:
        """Whether the queue has no room left."""
        return self.queued >= self.max_queue

    def retry_after(self) -> int:
        """Seconds until the waiting texts are likely done, at the throughput measured so far (at least 1)."""
        if not self._busy or not self.texts:
            return 1
        return max(1, math.ceil(self.queued * self._busy / self.texts))

    async def start(self) -> None:
        """Start the worker; call from the running event loop."""
        self._wake = asyncio.Event()
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
        """Probabilities of ``texts``, computed in a batch shared with concurrent callers.

        Cancelling the call (``asyncio.wait_for`` timing out, say) takes its texts out of the queue if their forward
        pass has not started; one already running finishes, and its rows are dropped.

        Raises:
            QueueFull: The waiting texts and these would be more than ``max_queue``.
        """
        if self.queued + len(texts) > self.max_queue:
            raise QueueFull(self.queued, self.max_queue, self.retry_after())
        loop = asyncio.get_running_loop()
        job = _Job(texts, loop.create_future(), loop.time())
        self._pending.append(job)
        self.queued += len(texts)
        self._wake.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            if job in self._pending:
                self._pending.remove(job)
                self.queued -= len(texts)
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._batch_ready(loop)
            await self._answer(loop, self._take())

    async def _batch_ready(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a full batch waits, or the oldest waiting request has waited ``max_wait``."""
        while True:
            self._wake.clear()  # any request queued after this check sets it again
            if not self._pending:
                await self._wake.wait()
                continue
            left = self._pending[0].queued_at + self.max_wait - loop.time()
            if self.queued >= self.max_batch_size or left <= 0:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    def _take(self) -> list[_Job]:
        """The oldest requests whose texts fit into one batch (the first always does, however many texts it has)."""
        batch, size = [], 0
        while self._pending and (not batch or size + len(self._pending[0].texts) <= self.max_batch_size):
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.texts)
        self.queued -= size
        return batch

    async def _answer(self, loop: asyncio.AbstractEventLoop, batch: list[_Job]) -> None:
        texts = [text for job in batch for text in job.texts]
        start = loop.time()
        try:
            probs = await loop.run_in_executor(self._executor, self.predict_fn, texts)  # (n_texts, n_labels)
        except Exception as err:
            if len(batch) > 1:  # one request's texts may be what failed: re-run each alone, so only that one fails
                for job in batch:
                    if not job.future.done():
                        await self._answer(loop, [job])
            elif not batch[0].future.done():  # handed to the caller, whose request then fails with a 500
                batch[0].future.set_exception(err)
            return
        self._busy += loop.time() - start
        self.calls += 1
        self.texts += len(texts)
        offset = 0
        for job in batch:
            if not job.future.done():  # a caller that timed out has a cancelled future
                job.future.set_result(probs[offset : offset + len(job.texts)])
            offset += len(job.texts)


def create_app(
    classifier: Predictor,
    *,
    max_batch_size: int = 64,
    max_wait_ms: float = 5.0,
    max_texts: int = 256,
    max_chars: int = 10_000,
    max_body_bytes: int = 4_000_000,
    max_queue: int = 1024,
    timeout: float = 30.0,
    api_key: str | None = None,
    allowed_hosts: Sequence[str] | None = LOCAL_HOSTS,
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
        max_queue: Most texts waiting for a forward pass (more: 503 with ``Retry-After``). Counted in texts, as the
            work is; at least ``max_texts``. The default, 1024, is 4 full requests, and about 5 s of work for short
            texts on a 2-core CPU: well inside ``timeout``, so an admitted request is almost always answered.
        timeout: Seconds a request may wait for its prediction, queue included (longer: 504).
        api_key: If set, ``/predict`` and ``/info`` need ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
        allowed_hosts: Host header values (any port) the server answers; others get 400. None answers any: use it
            behind a proxy, or when binding a public address (:func:`run_server` chooses this from the bind).
        precision: ``fp32`` (probabilities exactly as ``predict_proba``), ``bf16``/``fp16`` autocast, or ``auto``
            (bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs: several times the throughput of fp32 on large
            batches, probabilities within about 1e-2).

    Returns:
        The app; run it with uvicorn, or with :func:`run_server`.

    Raises:
        ConfigError: An option is out of range.

    >>> app = create_app(TextClassifier.from_pretrained("runs/spam"), api_key="s3cret")  # doctest: +SKIP
    """
    _check_options(max_texts, max_queue, timeout, api_key)
    model_lock = threading.Lock()  # Captum hooks the embedding layer during an explanation: predictions wait
    batcher = MicroBatcher(_predict_fn(classifier, precision, model_lock), max_batch_size, max_wait_ms, max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    limits = {"max_texts": max_texts, "max_chars": max_chars, "max_body_bytes": max_body_bytes}
    # With a key, /info is private, and the docs (open to all) do not list the labels either.
    labels = "" if api_key else f" with labels {classifier.labels}"
    app = FastAPIOffline(
        title="bertfit",
        version=__version__,
        description=f"Text classification{labels}. Try it at `/`. Limits per request: {max_texts} texts, "
        f"{max_chars} characters per text, {max_body_bytes} bytes of body; answered within {timeout:g} s.",
        lifespan=lifespan,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.state.batcher = batcher
    app.state.timeout = timeout
    app.state.model_lock = model_lock
    # The last added runs first: the Host check, then the key (before any body is read), then the body limit.
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)
    if api_key is not None:
        app.add_middleware(_ApiKey, key=api_key, paths=PROTECTED_PATHS)
    if allowed_hosts is not None:
        app.add_middleware(_HostCheck, allowed=allowed_hosts)
    _add_error_handlers(app)
    _add_routes(app, classifier, batcher, {**limits, "max_queue": max_queue, "timeout": timeout}, api_key is not None)
    return app


def _add_routes(
    app: FastAPI, classifier: Predictor, batcher: MicroBatcher, limits: dict[str, Any], keyed: bool
) -> None:
    dependencies, unauthorized = [], {}
    if keyed:  # declares the key to OpenAPI (the docs' Authorize button); _ApiKey does the checking
        dependencies = [
            Security(HTTPBearer(auto_error=False)),
            Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
        ]
        unauthorized = _UNAUTHORIZED
    decision = classifier.card.decision

    async def predict(request: BaseModel) -> dict[str, Any]:
        """Label, score and class probabilities of each text (multi-label models: the label set and probabilities)."""
        texts = _clean_texts(request.texts, limits["max_texts"], limits["max_chars"])
        try:
            probs = await asyncio.wait_for(batcher.predict(texts), limits["timeout"])
        except QueueFull as full:
            raise HTTPException(
                503, f"the server is at capacity ({full}); retry later", headers={"Retry-After": str(full.retry_after)}
            ) from None
        except asyncio.TimeoutError:
            raise HTTPException(
                504, f"the prediction did not finish within {limits['timeout']:g} s; retry later, or send fewer texts"
            ) from None
        return {"predictions": [decision.response(row) for row in probs]}

    # The body model is built per app, so FastAPI gets the class itself, not a name to look up.
    predict.__annotations__["request"] = _request_model(limits["max_texts"], limits["max_chars"])
    app.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_none=True,
        responses={**_PREDICT_ERRORS, **unauthorized},
        dependencies=dependencies,
    )(predict)
    _add_explain_route(app, classifier, limits, dependencies, unauthorized)

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        """Liveness (200 while the process runs), and how many texts and forward passes were served."""
        return {"status": "ok", "texts": batcher.texts, "forward_passes": batcher.calls}

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "headers": _RETRY_AFTER}})
    async def ready() -> Any:
        """Readiness: 200 while the model is loaded and the queue has room, else 503 with ``Retry-After``."""
        status = "stopped" if not batcher.running else "busy" if batcher.full else "ready"
        body = {"status": status, "queued_texts": batcher.queued, "max_queue": batcher.max_queue}
        if status == "ready":
            return body
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(batcher.retry_after())})

    @app.get("/info", responses=unauthorized, dependencies=dependencies)
    async def model_info() -> dict[str, Any]:
        """Labels, base model, max_length, long-text rule, thresholds and the training metrics of the served model."""
        return _model_info(classifier, limits)

    page = resources.files("bertfit").joinpath(PAGE_FILE).read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page


def _add_explain_route(
    app: FastAPI, classifier: Predictor, limits: dict[str, Any], dependencies: list, unauthorized: dict
) -> None:
    unavailable = explanation_unavailable(classifier)
    slot = threading.Lock()  # one explanation at a time; held from its start until its thread ends

    async def explain_text(request: BaseModel) -> dict[str, Any]:
        """Per-word attributions (integrated gradients) of one text for a label, by default the predicted one."""
        if unavailable is not None:
            raise HTTPException(501, unavailable)
        try:
            (text,) = _clean_texts([request.text], 1, limits["max_chars"])
        except HTTPException as err:  # its messages name "texts[0]"; this body has one "text"
            raise HTTPException(err.status_code, err.detail.replace("texts[0]", "text", 1)) from None
        if not slot.acquire(blocking=False):
            raise HTTPException(
                503, "an explanation is already running (one at a time); retry later", headers={"Retry-After": "1"}
            )
        work = functools.partial(explain, classifier, text, request.label, steps=request.steps)
        try:
            explanation = await asyncio.wait_for(_in_thread(work, app.state.model_lock, slot), limits["timeout"])
        except asyncio.TimeoutError:
            raise HTTPException(
                504, f"the explanation did not finish within {limits['timeout']:g} s; retry with fewer steps"
            ) from None
        return explanation.to_dict()

    explain_text.__annotations__["request"] = _explain_request_model(classifier.labels, limits["max_chars"])
    app.post(
        "/explain",
        response_model=ExplainResponse,
        responses={**_EXPLAIN_ERRORS, **unauthorized},
        dependencies=dependencies,
    )(explain_text)


def _in_thread(work: Callable[[], Any], lock: threading.Lock, slot: threading.Lock) -> asyncio.Future:
    """``work()`` holding ``lock`` in a thread of its own, started now; ``slot`` is released when it ends, whether
    or not anyone still awaits the result (a timed-out caller does not stop a running explanation)."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(method: str, value: Any) -> None:
        if not future.done():  # cancelled when the caller timed out
            getattr(future, method)(value)

    def run() -> None:
        try:
            with lock:
                outcome = ("set_result", work())
        except Exception as err:  # handed to the caller, whose request then fails with a 500
            outcome = ("set_exception", err)
        finally:
            slot.release()
        with contextlib.suppress(RuntimeError):  # the event loop is closed: the server stopped meanwhile
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=run, name="bertfit-explain", daemon=True).start()
    return future


_BIND_FIXES = {
    errno.EADDRINUSE: "another process listens there (a server started earlier?): stop it or pass another --port",
    errno.EADDRNOTAVAIL: "--host must be an address of this machine, e.g. 127.0.0.1 or 0.0.0.0 (all of them)",
    errno.EACCES: "ports below 1024 need privileges: pass e.g. --port 8000",
}


def check_address(host: str, port: int) -> None:
    """Refuse ``host:port`` when a server could not listen there, before a model is loaded for it.

    A probe socket binds each address the host resolves to (as asyncio's server, under uvicorn, binds them all;
    with ``SO_REUSEADDR``, as it does) and closes at once.

    Raises:
        ConfigError: The port is in use, the host is not an address of this machine, or the port needs privileges.
    """
    try:
        addresses = {info[:3] + info[4:] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except socket.gaierror as err:
        raise ConfigError(f"--host {host!r} is not a name or address this machine resolves ({err.strerror})") from None
    for family, kind, protocol, address in sorted(addresses, key=str):
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as err:
                fix = _BIND_FIXES.get(err.errno, "pass another --host or --port")
                raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}; {fix}") from None


def run_server(
    classifier: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    allowed_hosts: Sequence[str] = (),
    **app_options: Any,
) -> None:
    """Serve ``classifier`` with uvicorn until interrupted; ``app_options`` go to :func:`create_app`.

    On SIGTERM the server stops accepting connections, answers the requests in flight (each within its ``timeout``)
    and exits normally, so a process manager sees a clean stop.

    Args:
        classifier: What to serve.
        host: Interface to listen on; a non-loopback one without ``api_key`` logs a warning.
        port: TCP port.
        allowed_hosts: Host names clients may use besides :data:`LOCAL_HOSTS`. Host headers are checked when
            binding a loopback address, or when names are given; otherwise any Host is answered.

    Raises:
        MissingDependencyError: uvicorn is not installed.
    """
    try:
        import uvicorn
    except ImportError:
        raise MissingDependencyError.for_extra("bertfit serve", "serve", "uvicorn") from None
    local = _is_loopback(host)
    if not local and app_options.get("api_key") is None:
        logger.warning(
            "serving on %s without an API key: anyone who can reach this address can use the model; "
            "set --api-key or the BERTFIT_API_KEY environment variable",
            host,
        )
    hosts = [*LOCAL_HOSTS, *allowed_hosts] if local or allowed_hosts else None
    app = create_app(classifier, allowed_hosts=hosts, **app_options)
    # In-flight requests end within their timeout; a margin more, and stuck connections are cut.
    grace = math.ceil(app.state.timeout) + 5
    with _exit_cleanly_on_sigterm():
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=grace)


@contextlib.contextmanager
def _exit_cleanly_on_sigterm() -> Iterator[None]:
    """uvicorn drains on SIGTERM, then re-raises the signal to the handler it found, which by default kills the
    process (exit status 143) after the clean shutdown; a handler that does nothing lets it return instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_options(max_texts: int, max_queue: int, timeout: float, api_key: str | None) -> None:
    if max_queue < max_texts:
        raise ConfigError(
            f"max_queue ({max_queue} texts) is below max_texts ({max_texts}), so a full request could never be "
            "queued; raise --max-queue or lower --max-texts"
        )
    if not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if api_key is not None and not api_key.strip():
        raise ConfigError("api_key is empty; pass a non-empty key, or none to serve without authentication")


def _predict_fn(classifier: Predictor, precision: str, lock: threading.Lock) -> Callable[[list[str]], np.ndarray]:
    """``predict_proba`` of ``classifier`` predicting in ``precision`` (sharing its weights), run holding ``lock``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    predict_proba = classifier.with_precision(precision).predict_proba

    def predict(texts: list[str]) -> np.ndarray:
        with lock:
            return predict_proba(texts)

    return predict


def _clean_texts(texts: list[str], max_texts: int, max_chars: int) -> list[str]:
    """The texts as the model gets them: limits checked and texts with nothing to classify refused (422), lone
    surrogates replaced with U+FFFD (tokenizers raise on them; the text is still classified)."""
    if len(texts) > max_texts:
        raise HTTPException(422, f"at most {max_texts} texts per request, got {len(texts)}; split the request")
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise HTTPException(422, f"texts[{i}] has {len(text)} characters, over the limit of {max_chars}")
        if not _VISIBLE.search(text):
            raise HTTPException(
                422,
                f"texts[{i}] is empty or only whitespace and invisible characters (such as NUL or zero-width "
                "spaces): there is nothing to classify; leave it out of the request",
            )
    cleaned = [_SURROGATES.sub("\ufffd", text) for text in texts]
    if cleaned != texts:
        logger.warning("replaced lone surrogates (not valid Unicode) with U+FFFD in a request's texts")
    return cleaned


def _model_info(classifier: Predictor, limits: dict[str, Any]) -> dict[str, Any]:
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
        "temperature": card.decision.temperature,
        "metrics": classifier.metrics,
        "limits": limits,
        "explain": explanation_unavailable(classifier) is None,  # POST /explain answers (else 501)
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
        # Pydantic's error list without the echoed input (which may be megabytes of text); a location may be a
        # client's key, so lone surrogates are replaced there too (the JSON encoder would fail on them).
        errors = [
            {
                "loc": _SURROGATES.sub("\ufffd", ".".join(str(part) for part in err["loc"] if part != "body")),
                "msg": err["msg"],
            }
            for err in exc.errors()
        ]
        status = 400 if any(err["type"] == "json_invalid" for err in exc.errors()) else 422
        expected = '{"text": "a text"}' if _route_path(request.scope) == "/explain" else '{"texts": ["a text", ...]}'
        message = "malformed JSON" if status == 400 else f"expected {expected}"
        return JSONResponse({"detail": message, "errors": errors}, status_code=status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal server error; the server log has the details"}, status_code=500)


def _refuse(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class _HostCheck:
    """ASGI middleware: 400 for requests whose Host header (any port) is not in ``allowed``. A page on another site
    cannot then reach a server on localhost by pointing its own domain at 127.0.0.1 (DNS rebinding)."""

    def __init__(self, app, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(name.lower() for name in allowed)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _host_name(scope) not in self.allowed:
            names = ", ".join(sorted(self.allowed))
            refusal = _refuse(
                400,
                f"this server answers requests addressed to {names} only (a guard against DNS rebinding); to reach "
                "it by another name, start it with --allowed-host NAME",
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_name(scope) -> str:
    """The Host header's name, lower-cased and without its port (an IPv6 address keeps its brackets)."""
    host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.partition(":")[0]


class _ApiKey:
    """ASGI middleware: requests to ``paths`` need ``key`` as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``,
    else 401, checked before their body is read."""

    def __init__(self, app, key: str, paths: Sequence[str]) -> None:
        self.app = app
        self.digest = hashlib.sha256(key.encode("utf-8")).digest()
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _route_path(scope) in self.paths and not self._authorized(scope["headers"]):
            refusal = _refuse(
                401,
                "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
                **{"WWW-Authenticate": "Bearer"},
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        given = [value for name, value in headers if name == b"x-api-key"]
        given += [
            value[7:].strip()
            for name, value in headers
            if name == b"authorization" and value[:7].lower() == b"bearer "
        ]
        # Equal-length digests compared in constant time: the time taken tells nothing about the key or its length.
        return any(hmac.compare_digest(hashlib.sha256(value).digest(), self.digest) for value in given)


def _route_path(scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


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
            await _refuse(400, "invalid Content-Length header: expected the body size in bytes")(scope, receive, send)
            return
        too_large = _refuse(413, f"request body over the limit of {self.max_bytes} bytes; send fewer or shorter texts")
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
