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
from starlette.testclient import TestClient
from typer.testing import CliRunner

httpx = pytest.importorskip("httpx")  # the serve extra is part of the dev dependencies
uvicorn = pytest.importorskip("uvicorn")

from bertfit import TextClassifier  # noqa: E402
from bertfit.card import ModelCard  # noqa: E402
from bertfit.cli import app as cli_app  # noqa: E402
from bertfit.decision import DecisionRule  # noqa: E402
from bertfit.exceptions import ConfigError, MissingDependencyError  # noqa: E402
from bertfit.features import Windowing  # noqa: E402
from bertfit.predictor import Predictor  # noqa: E402
from bertfit.serve import create_app, run_server  # noqa: E402

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
    monkeypatch.setenv("BERTFIT_API_KEY", "from-the-environment")
    options = ["--port", "8123", "--max-batch-size", "1", "--max-wait-ms", "2", "--max-queue", "300", "--timeout", "7"]

    result = CliRunner().invoke(cli_app, ["serve", str(trained_dir), *options])

    assert result.exit_code == 0, result.output
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 8123)
    assert seen["timeout_graceful_shutdown"] == 12  # in-flight requests end within --timeout; 5 s more to drain
    batcher = seen["app"].state.batcher
    assert (batcher.max_batch_size, batcher.max_wait, batcher.max_queue) == (1, 0.002, 300)
    with TestClient(seen["app"], base_url="http://localhost:8123") as client:
        assert client.get("/info").status_code == 401
        assert client.get("/info", headers={"X-API-Key": "from-the-environment"}).status_code == 200
    assert "from-the-environment" not in result.output


@pytest.mark.parametrize(
    ("host", "names", "refused", "answered", "warns"),
    [
        ("127.0.0.1", [], ["evil.example", "127.0.0.1.evil.example"], ["localhost:8000", "127.0.0.1", "[::1]:80"], 0),
        ("localhost", ["api.internal"], ["evil.example"], ["api.internal:443", "LOCALHOST"], 0),
        ("0.0.0.0", [], [], ["evil.example", "10.0.0.7:8000"], 1),  # a public bind: any Host, and a warning
        ("0.0.0.0", ["api.example"], ["evil.example"], ["api.example", "localhost"], 1),
    ],
)
def test_serve_checks_the_host_header_on_loopback_binds(
    trained_dir, monkeypatch, host, names, refused, answered, warns
):
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: seen.update(app=app, **kwargs))
    args = ["serve", str(trained_dir), "--host", host, *(f"--allowed-host={name}" for name in names)]

    result = CliRunner().invoke(cli_app, args)

    assert result.exit_code == 0, result.output
    assert result.output.count(f"WARNING: serving on {host} without an API key") == warns
    with TestClient(seen["app"]) as client:
        for name in refused:
            response = client.get("/health", headers={"Host": name})
            assert response.status_code == 400, name
            assert "--allowed-host NAME" in response.json()["detail"]
        for name in answered:
            assert client.get("/health", headers={"Host": name}).status_code == 200, name


def test_run_server_warns_on_a_public_bind_without_a_key(clf, monkeypatch, caplog):
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    run_server(clf, host="::", api_key="k")
    run_server(clf, host="::1")
    assert not caplog.records
    run_server(clf, host="192.168.1.5")
    assert "serving on 192.168.1.5 without an API key" in caplog.text


def test_api_key_guards_predict_and_info_only(url_with_key):
    body = {"texts": ["the film was great"]}
    wrong = [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}, {"Authorization": "s3cret-key"}]
    for headers in wrong:
        for response in (
            httpx.post(f"{url_with_key}/predict", json=body, headers=headers),
            httpx.get(f"{url_with_key}/info", headers=headers),
        ):
            assert response.status_code == 401, headers
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer KEY" in response.json()["detail"]
    # Checked before the body is read: an unauthenticated client learns nothing from a malformed body either.
    assert httpx.post(f"{url_with_key}/predict", content=b"{oops").status_code == 401
    for headers in (
        {"Authorization": "Bearer s3cret-key"},
        {"authorization": "bearer s3cret-key"},
        {"X-API-Key": "s3cret-key"},
    ):
        assert httpx.post(f"{url_with_key}/predict", json=body, headers=headers).status_code == 200, headers
        assert httpx.get(f"{url_with_key}/info", headers=headers).json()["labels"] == ["neg", "pos"]
    for open_path in ("/health", "/ready", "/", "/docs", "/openapi.json"):
        assert httpx.get(f"{url_with_key}{open_path}").status_code == 200, open_path
    schema = httpx.get(f"{url_with_key}/openapi.json").json()
    assert schema["paths"]["/predict"]["post"]["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
    assert "neg" not in schema["info"]["description"]  # the open docs do not give away what /info guards


@pytest.fixture(scope="module")
def url_with_key(clf):
    with running(create_app(clf, api_key="s3cret-key")) as base:
        yield base


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_texts": 300, "max_queue": 200}, r"max_queue \(200 texts\) is below max_texts \(300\)"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"api_key": " "}, "api_key is empty"),
    ],
)
def test_create_app_refuses_options_out_of_range(clf, options, message):
    with pytest.raises(ConfigError, match=message):
        create_app(clf, **options)


def test_docs_load_only_local_assets(url):
    for page in ("/docs", "/redoc"):
        text = httpx.get(f"{url}{page}").text
        assert "://" not in text, page  # no CDN, no fonts, no validator badge
        refs = re.findall(r'(?:src|href|spec-url)="([^"]+)"', text) + re.findall(r"url: '([^']+)'", text)
        assert len(refs) >= 3, text
        for ref in refs:
            assert ref.startswith("/"), ref
            response = httpx.get(f"{url}{ref}")
            assert response.status_code == 200, ref
            assert len(response.content) > 1000, ref


def test_docs_render_without_a_network_in_headless_chromium(url, tmp_path):
    """Swagger UI draws the /predict operation with every host but the server unreachable."""
    dom = _chromium_dom(f"{url}/docs", tmp_path, "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    assert 'data-path="/predict"' in dom, dom[-2000:]
    assert "Failed to load API definition" not in dom


def test_missing_serve_extra_gives_the_install_line(trained_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes `import fastapi` fail
    monkeypatch.delitem(sys.modules, "bertfit.serve")
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[serve\]'"):
        import bertfit.serve  # noqa: F401

    result = CliRunner().invoke(cli_app, ["serve", str(trained_dir)])
    assert result.exit_code == 3
    assert "MissingDependencyError: bertfit serve needs fastapi" in result.output
    assert "pip install 'bertfit[serve]'" in result.output


def _chromium_dom(address: str, tmp_path, *flags: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed; `make chromium` installs it (make test does)")
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
        *flags,
        "--dump-dom",
        address,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout


def test_page_classifies_a_text_in_headless_chromium(clf, url, tmp_path):
    text = "it was quite superb"
    dom = _chromium_dom(f"{url}/?text={quote(text)}", tmp_path)  # the page fills the box from ?text= and classifies

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


def test_page_asks_for_the_key_when_the_server_needs_one(url, url_with_key, tmp_path):
    assert '<p id="keybox" hidden="">' in _chromium_dom(f"{url}/", tmp_path)
    dom = _chromium_dom(f"{url_with_key}/?text=great", tmp_path)
    assert '<p id="keybox">' in dom, dom[-2000:]  # shown after /info and /predict answered 401
    assert "missing or wrong API key" in dom


def test_bf16_autocast_serving_stays_close_to_fp32(clf):
    with running(create_app(clf, precision="bf16")) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": TEXTS}).json()["predictions"]
    expected = clf.predict_proba(TEXTS)
    assert np.allclose([list(p["probabilities"].values()) for p in predictions], expected, atol=0.05)
