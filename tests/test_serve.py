"""The HTTP server: real uvicorn servers on 127.0.0.1 driven by httpx, and the try-it page in headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from urllib.parse import quote

import numpy as np
import pytest
from typer.testing import CliRunner

httpx = pytest.importorskip("httpx")  # the serve extra is part of the dev dependencies
uvicorn = pytest.importorskip("uvicorn")

from bertfit import TextClassifier  # noqa: E402
from bertfit.card import ModelCard  # noqa: E402
from bertfit.cli import app as cli_app  # noqa: E402
from bertfit.decision import DecisionRule  # noqa: E402
from bertfit.exceptions import MissingDependencyError  # noqa: E402
from bertfit.features import Windowing  # noqa: E402
from bertfit.predictor import Predictor  # noqa: E402
from bertfit.serve import create_app  # noqa: E402

TEXTS = ["the film was great", "this movie is awful", "it was quite superb", "the plot is really boring"]


@contextlib.contextmanager
def running(app):
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def clf(trained_dir):
    return TextClassifier.from_pretrained(trained_dir)


@pytest.fixture(scope="module")
def url(clf):
    with running(create_app(clf, max_texts=4, max_chars=50, max_body_bytes=2_000)) as base:
        yield base


def test_predict_returns_label_score_and_probabilities(clf, url):
    response = httpx.post(f"{url}/predict", json={"texts": TEXTS})

    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = clf.predict_proba(TEXTS)
    assert [p["label"] for p in predictions] == clf.predict(TEXTS)
    for p, probs in zip(predictions, expected):
        assert list(p["probabilities"]) == clf.labels
        assert list(p["probabilities"].values()) == pytest.approx(probs.tolist(), abs=1e-6)
        assert p["score"] == pytest.approx(probs.max(), abs=1e-6)


def test_health_info_docs_and_no_server_paths(clf, url, trained_dir):
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    info = httpx.get(f"{url}/info")
    assert info.status_code == 200
    body = info.json()
    assert body["labels"] == ["neg", "pos"]
    assert body["max_length"] == clf.max_length
    assert body["metrics"]["macro_f1"] == clf.metrics["macro_f1"]
    assert body["threshold"] == clf.threshold  # tuned on validation by training
    assert str(trained_dir.parent.parent) not in info.text and "/" not in body["base_model"]
    assert httpx.get(f"{url}/docs").status_code == 200
    assert "/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"texts": ["a"] * 5}, 422, "at most 4 texts per request, got 5"),
        ({"texts": ["ok", "x" * 51]}, 422, "texts[1] has 51 characters, over the limit of 50"),
        ({"texts": []}, 422, "at least 1 item"),
        ({"texts": "one text"}, 422, "valid list"),
        ({"texts": ["fine", 3]}, 422, "valid string"),
        ({"text": ["fine"]}, 422, "Field required"),
        ({"texts": ["fine"], "extra": 1}, 422, "Extra inputs"),
        ('{"texts": ["unclosed"', 400, "JSON"),
        ({"texts": ["y" * 40] * 4 + ["z" * 2000]}, 413, "over the limit of 2000 bytes"),
    ],
)
def test_bad_requests_get_clear_4xx_errors(url, payload, status, message):
    content = payload if isinstance(payload, str) else None
    kwargs = {"content": content, "headers": {"content-type": "application/json"}} if content else {"json": payload}

    response = httpx.post(f"{url}/predict", **kwargs)

    assert response.status_code == status
    assert message in response.text
    assert "Traceback" not in response.text


def test_a_streamed_body_over_the_limit_is_refused(url):
    def chunks():
        for _ in range(10):
            yield b" " * 500

    response = httpx.post(f"{url}/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


class _Broken(Predictor):
    card_ = ModelCard(DecisionRule(("neg", "pos")), Windowing(16), base_model="/srv/secret/models/base")

    def _logits(self, texts):
        raise RuntimeError("cannot read /srv/secret/models/model.safetensors")


def test_server_errors_reveal_no_paths_or_tracebacks():
    with running(create_app(_Broken())) as base:
        response = httpx.post(f"{base}/predict", json={"texts": ["hello"]})
        info = httpx.get(f"{base}/info").json()

    assert response.status_code == 500
    assert "secret" not in response.text and "Traceback" not in response.text
    assert info["base_model"] == "base"


def _fire(base: str, texts: list[str]) -> list[dict]:
    async def main():
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/predict", json={"texts": [t]}) for t in texts))
        assert all(r.status_code == 200 for r in responses)
        return [r.json()["predictions"][0] for r in responses]

    return asyncio.run(main())


def test_concurrent_requests_share_forward_passes(clf):
    texts = [TEXTS[i % len(TEXTS)] + " " * (i % 3) for i in range(24)]
    app = create_app(clf, max_batch_size=64, max_wait_ms=200)
    with running(app) as base:
        predictions = _fire(base, texts)
        health = httpx.get(f"{base}/health").json()

    assert health["texts"] == 24
    assert health["forward_passes"] < 24  # batched: several requests per forward pass
    expected = clf.predict_proba(texts)
    assert [p["label"] for p in predictions] == clf.predict(texts)  # each caller got its own row back
    assert np.allclose([list(p["probabilities"].values()) for p in predictions], expected, atol=1e-5)


def test_max_batch_size_1_runs_one_request_per_forward_pass(clf):
    app = create_app(clf, max_batch_size=1, max_wait_ms=50)
    with running(app) as base:
        _fire(base, TEXTS * 2)
        assert httpx.get(f"{base}/health").json()["forward_passes"] == 8


def test_saved_threshold_decides_the_label(clf):
    class Thresholded(Predictor):
        card_ = clf.card.with_decision(replace(clf.decision, positive_label="pos", threshold=0.999999))
        _logits = staticmethod(clf._logits)

    with running(create_app(Thresholded())) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": ["the film was great"]}).json()["predictions"]
    assert predictions[0]["probabilities"]["pos"] < 0.999999
    assert predictions[0]["label"] == "neg"


def test_cli_serve_passes_its_options_to_uvicorn(trained_dir, monkeypatch):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))

    result = CliRunner().invoke(
        cli_app, ["serve", str(trained_dir), "--port", "8123", "--max-batch-size", "1", "--max-wait-ms", "2"]
    )

    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    batcher = seen["app"].state.batcher
    assert (batcher.max_batch_size, batcher.max_wait) == (1, 0.002)


def test_missing_serve_extra_gives_the_install_line(trained_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    monkeypatch.delitem(sys.modules, "bertfit.serve")
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[serve\]'"):
        import bertfit.serve  # noqa: F401

    result = CliRunner().invoke(cli_app, ["serve", str(trained_dir)])
    assert result.exit_code == 2
    assert "MissingDependencyError: bertfit serve needs fastapi" in result.output
    assert "pip install 'bertfit[serve]'" in result.output


def test_page_classifies_a_text_in_headless_chromium(clf, url, tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed; `make chromium` installs it (make test does)")
    text = "it was quite superb"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        f"{url}/?text={quote(text)}",  # the page fills the box from ?text= and clicks Classify
    ]

    dom = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout

    expected = dict(zip(clf.labels, clf.predict_proba(text).tolist()))
    label = clf.predict(text)
    match = re.search(r'<div id="label">([^<]*)</div>', dom)
    assert match, dom[-2000:]
    assert html.unescape(match.group(1)).startswith(f"{label} (")
    rows = dict(re.findall(r'data-label="([^"]+)" data-probability="([^"]+)"', dom))
    assert rows.keys() == expected.keys()
    for name, p in rows.items():
        assert float(p) == pytest.approx(expected[name], abs=1e-5)
    assert len(re.findall(r'class="bar" style="width: [\d.]+%;"', dom)) == len(clf.labels)
    assert 'id="classify"' in dom and "<textarea" in dom


def test_bf16_autocast_serving_stays_close_to_fp32(clf):
    with running(create_app(clf, precision="bf16")) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": TEXTS}).json()["predictions"]
    expected = clf.predict_proba(TEXTS)
    assert np.allclose([list(p["probabilities"].values()) for p in predictions], expected, atol=0.05)
