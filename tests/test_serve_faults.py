"""The server under faults: any text in valid JSON gets a 200 or a 4xx, load is shed with 503/504 instead of growing
latency, SIGTERM drains requests in flight, a schema-driven fuzzer finds no 500, and bad requests do not disturb
good ones. Real uvicorn servers on 127.0.0.1 driven by httpx (``running`` of test_serve.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")  # the serve extra is part of the dev dependencies
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from test_serve import TEXTS, running  # noqa: E402

from bertfit import TextClassifier  # noqa: E402
from bertfit.card import ModelCard  # noqa: E402
from bertfit.decision import DecisionRule  # noqa: E402
from bertfit.features import Windowing  # noqa: E402
from bertfit.predictor import Predictor  # noqa: E402
from bertfit.serve import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_CHARS = 2_000
NASTY_TEXTS = {
    "lone high surrogate": "\ud800",
    "lone low surrogate in a word": "ab\udfffcd",
    "reversed surrogate pair": "\udc00\ud800 text",
    "half an emoji": "great film \ud83d",
    "NUL inside": "good\x00film",
    "control characters": "bell\x07 escape\x1b[31m red",
    "emoji": "\U0001f600" * 300,
    "emoji ZWJ sequence": "\U0001f469\u200d\U0001f469\u200d\U0001f467 the film was great",
    "right to left": "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd \u0645\u0631\u062d\u0628\u0627",
    "bidi override": "\u202egreat film\u202c",
    "combining marks": "e" + "\u0301" * 1_000,
    "largest code point": "\U0010ffff",
    "noncharacter": "\uffff\ufffe",
    "private use": "\ue000\U000f0000",
    "line separators": "good\u2028film\u2029great",
    "CJK": "\u6f22\u5b57" * 500,
    "at the length limit": "superb " * (MAX_CHARS // 7) + "x" * (MAX_CHARS % 7),
}
BLANK_TEXTS = ["", " ", "\t\r\n", "\x00", "\x00\x01\x7f", "\u200b\u200d", "\ufeff", "\u3000\u00a0", "\u202e\u2066"]


@pytest.fixture(scope="module")
def clf(trained_dir):
    return TextClassifier.from_pretrained(trained_dir)


@pytest.fixture(scope="module")
def url(clf):
    with running(create_app(clf, max_texts=8, max_chars=MAX_CHARS, max_body_bytes=200_000)) as base:
        yield base


def _post(base: str, payload: object, **kwargs) -> httpx.Response:
    """POST /predict with ``payload`` as ASCII JSON: lone surrogates travel as \\ud800 escapes (httpx's json= would
    fail to encode them)."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return httpx.post(f"{base}/predict", content=json.dumps(payload), headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize("name", NASTY_TEXTS)
def test_any_text_in_valid_json_is_classified(clf, url, name):
    text = NASTY_TEXTS[name]

    response = _post(url, {"texts": ["the film was great", text]})

    assert response.status_code == 200, response.text
    probs = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    # Lone surrogates are classified as U+FFFD, what a UTF-8 decoder makes of a broken byte.
    expected = clf.predict_proba(
        ["the film was great", text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")]
    )
    assert np.allclose(probs, expected, atol=1e-5)


@pytest.mark.parametrize("blank", BLANK_TEXTS)
def test_texts_with_nothing_to_classify_get_422_naming_their_index(url, blank):
    response = _post(url, {"texts": ["the film was great", blank]})

    assert response.status_code == 422
    assert response.json()["detail"].startswith("texts[1] is empty or only whitespace and invisible characters")


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b'{"texts": ["\xff\xfe"]}', 400),  # not UTF-8
        (b"[" * 50_000, 400),  # nested deeper than any JSON parser recurses
        (json.dumps({"texts": ["fine"], "\ud800": 1}).encode(), 422),  # a lone surrogate in an error's location
        (json.dumps({"texts": ["fine"], "\x00": 1}).encode(), 422),
        (b'{"texts": ["fine"], "texts": [1]}', 422),  # the last duplicate key wins
        (b'{"texts": [1e999]}', 422),
        (b"\xef\xbb\xbf" + b'{"texts": ["BOM"]}', 200),
        ('{"texts": ["UTF-16 JSON"]}'.encode("utf-16"), 200),
        (b"null", 422),
        (b"", 422),
    ],
)
def test_odd_bodies_get_a_4xx_or_are_answered(url, content, status):
    response = httpx.post(f"{url}/predict", content=content, headers={"content-type": "application/json"})

    assert response.status_code == status, response.text
    assert response.json()  # JSON, even when the client's keys are not valid Unicode
    assert "Traceback" not in response.text


def test_one_failing_request_does_not_fail_the_others_in_its_batch():
    class Picky(Predictor):
        card_ = ModelCard(DecisionRule(("neg", "pos")), Windowing(16))

        def _logits(self, texts):
            if any("boom" in text for text in texts):
                raise RuntimeError("this text breaks the model")
            return np.zeros((len(texts), 2))

    texts = ["fine", "also fine", "boom", "fine again", "still fine"]
    with running(create_app(Picky(), max_batch_size=64, max_wait_ms=300)) as base:
        statuses = asyncio.run(_statuses(base, [{"texts": [text]} for text in texts]))

    assert statuses == [200, 200, 500, 200, 200]


async def _statuses(base: str, payloads: list[dict]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        responses = await asyncio.gather(*(client.post("/predict", json=payload) for payload in payloads))
    return [response.status_code for response in responses]


class _Gated(Predictor):
    """Holds each forward pass until the test opens ``gate``; ``entered`` is set when one starts."""

    card_ = ModelCard(DecisionRule(("neg", "pos")), Windowing(16))

    def __init__(self):
        self.gate, self.entered = threading.Event(), threading.Event()

    def _logits(self, texts):
        self.entered.set()
        self.gate.wait(20)
        return np.zeros((len(texts), 2))


async def _until(client: httpx.AsyncClient, path: str, condition, limit: float = 20) -> dict:
    deadline = time.monotonic() + limit
    while True:
        body = (await client.get(path)).json()
        if condition(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.01)


def test_a_full_queue_answers_503_with_retry_after_and_is_not_ready():
    model = _Gated()
    app = create_app(model, max_batch_size=1, max_wait_ms=0, max_texts=2, max_queue=2)

    async def main(client: httpx.AsyncClient):
        running_one = asyncio.create_task(client.post("/predict", json={"texts": ["a"]}))
        await asyncio.to_thread(model.entered.wait, 20)
        queued = asyncio.create_task(client.post("/predict", json={"texts": ["b", "c"]}))
        await _until(client, "/ready", lambda body: body["queued_texts"] == 2)
        refused, not_ready = await client.post("/predict", json={"texts": ["d"]}), await client.get("/ready")
        model.gate.set()
        answered = [(await running_one).status_code, (await queued).status_code]
        return refused, not_ready, answered, await client.get("/ready")

    with running(app) as base:
        try:
            refused, not_ready, answered, ready = asyncio.run(_with_client(base, main))
        finally:
            model.gate.set()

    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert "at capacity (2 texts are waiting, and at most 2 may)" in refused.json()["detail"]
    assert not_ready.status_code == 503 and int(not_ready.headers["Retry-After"]) >= 1
    assert not_ready.json() == {"status": "busy", "queued_texts": 2, "max_queue": 2}
    assert answered == [200, 200]  # what was admitted is answered
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def _with_client(base: str, main):
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        return await main(client)


def test_a_request_past_its_timeout_gets_504_and_leaves_the_queue():
    model = _Gated()
    app = create_app(model, max_batch_size=1, max_wait_ms=0, timeout=0.5)

    async def main(client: httpx.AsyncClient):
        started = asyncio.create_task(client.post("/predict", json={"texts": ["a"]}))
        await asyncio.to_thread(model.entered.wait, 20)
        waiting = await client.post("/predict", json={"texts": ["b"]})  # queued behind the held forward pass
        late = await started
        queue = (await client.get("/ready")).json()
        model.gate.set()
        await _until(client, "/health", lambda body: body["forward_passes"] == 1)
        after = await client.post("/predict", json={"texts": ["c"]})
        return late, waiting, queue, after, (await client.get("/health")).json()

    with running(app) as base:
        try:
            late, waiting, queue, after, health = asyncio.run(_with_client(base, main))
        finally:
            model.gate.set()

    assert (late.status_code, waiting.status_code) == (504, 504)
    assert "did not finish within 0.5 s" in waiting.json()["detail"]
    assert queue["queued_texts"] == 0
    assert after.status_code == 200
    assert (health["texts"], health["forward_passes"]) == (2, 2)  # "b" was dropped, never predicted


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(trained_dir, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Requests wait 3 s for a batch to fill, so they are in flight when SIGTERM comes.
    command = [sys.executable, "-m", "bertfit", "serve", str(trained_dir), "--port", str(port)]
    command += ["--max-wait-ms", "3000"]
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
    base = f"http://127.0.0.1:{port}"

    async def main(client: httpx.AsyncClient):
        flying = [asyncio.create_task(client.post("/predict", json={"texts": [text]})) for text in TEXTS * 2]
        await _until(client, "/ready", lambda body: body["queued_texts"] == len(flying))
        process.send_signal(signal.SIGTERM)
        return await asyncio.gather(*flying)

    try:
        _wait_for(base, process)
        responses = asyncio.run(_with_client(base, main))
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert [response.status_code for response in responses] == [200] * 8, log.read_text()[-3000:]
    assert all(len(response.json()["predictions"]) == 1 for response in responses)
    assert code == 0, log.read_text()[-3000:]
    assert "Waiting for connections to close" in log.read_text()


def _wait_for(base: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server did not start within 120 s")


def test_fuzzing_the_api_from_its_schema_finds_no_500_and_no_schema_violation(clf):
    """schemathesis draws requests from /openapi.json (valid ones for every route, invalid bodies for the POSTs)
    and checks each answer: no 5xx, status code, headers and body as documented, valid data accepted, invalid
    data rejected with a 4xx."""
    app = create_app(clf, max_texts=8, max_chars=200, max_body_bytes=20_000)  # 8 x 200 escaped characters fit
    with running(app) as base:
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {operation.label for operation in operations} == {
            "POST /predict",
            "POST /explain",
            "GET /health",
            "GET /ready",
            "GET /info",
        }
        for operation in operations:
            modes = ["positive", "negative"] if operation.method == "post" else ["positive"]  # GETs take no input
            for mode in modes:
                _fuzz(operation, schemathesis.GenerationMode(mode))


def _fuzz(operation, mode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate()

    check()


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", ROOT / "benchmarks" / "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_requests_under_load_do_not_disturb_good_ones(clf):
    """The fault mode of benchmarks/serve_load.py, small: 32 clients, 4 of them sending bad requests."""
    serve_load = _serve_load()
    limits = {"max_texts": 8, "max_chars": 500, "max_body_bytes": 20_000}
    with running(create_app(clf, max_wait_ms=5, **limits)) as base:
        latencies, errors, _, answers = asyncio.run(
            serve_load._drive_with_faults(base, TEXTS, clients=28, requests=280, bad_clients=4, **limits)
        )

    assert errors == 0 and len(latencies) == 280  # every good request got its 200
    expected = {
        "malformed JSON": 400,
        "body over the limit": 413,
        "empty text": 422,
        "whitespace and NUL text": 422,
        "lone surrogates": 200,  # sanitized and classified
        "wrong types": 422,
        "not a list": 422,
        "too many texts": 422,
        "text too long": 422,
        "foreign Host": 400,
    }
    assert {kind: set(counts) for kind, counts in answers.items()} == {kind: {s} for kind, s in expected.items()}
