"""Explanations: a tiny BERT trained on texts whose label is decided by one planted word ("zebra", two WordPieces)
must put that word first; integrated gradients are complete (scores sum to the change of probability from the
baseline); words map back to the text by offsets, in truncate and chunk mode; the CLI, POST /explain over HTTP and
the try-it page's toggle."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import re
import sys
import threading
from dataclasses import replace
from urllib.parse import quote

import numpy as np
import pytest
from conftest import TINY_TRAINING, WORDS, build_tiny_bert
from typer.testing import CliRunner

pytest.importorskip("captum")  # the explain extra is part of the dev dependencies

from bertfit import ConfigError, MissingDependencyError, ModelError, TextDataset, TrainConfig, train  # noqa: E402
from bertfit.card import ModelCard  # noqa: E402
from bertfit.cli import app as cli_app  # noqa: E402
from bertfit.decision import DecisionRule  # noqa: E402
from bertfit.explain import explain, explanation_html, format_explanation  # noqa: E402
from bertfit.features import Windowing  # noqa: E402
from bertfit.model import load_classifier  # noqa: E402
from bertfit.predictor import Predictor  # noqa: E402

TRIGGER = "zebra"
FILLER = [w for w in WORDS if w not in ("not",)]  # any word but the trigger; none decides the label


def _text(rng: random.Random, trigger: bool, n_words: tuple[int, int] = (4, 9)) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(*n_words))]
    if trigger:
        words.insert(rng.randint(0, len(words)), TRIGGER)
    return " ".join(words)


def _rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [(_text(rng, i % 2 == 0), "pos" if i % 2 == 0 else "neg") for i in range(n)]


@pytest.fixture(scope="module")
def zebra_dir(tmp_path_factory):
    """A tiny BERT whose vocabulary cuts "zebra" into two pieces (zeb ##ra), trained until the word decides."""
    base = build_tiny_bert(
        tmp_path_factory.mktemp("zebra-bert"), [*WORDS, "zeb", "##ra", "##s"], "abcdefghijklmnopqrstuvwxyz,!."
    )
    rows = _rows(240, seed=1)
    out = tmp_path_factory.mktemp("zebra-trained") / "model"
    options = {**TINY_TRAINING, "epochs": 2, "metric_for_best_model": "loss"}  # not the first epoch at 100%
    train(
        TrainConfig(model_name_or_path=str(base), output_dir=str(out), **options),
        TextDataset([t for t, _ in rows], [lab for _, lab in rows]),
    )
    return out


@pytest.fixture(scope="module")
def clf(zebra_dir):
    return load_classifier(zebra_dir)


@pytest.fixture(scope="module")
def test_texts():
    rng = random.Random(7)
    return [_text(rng, trigger=True) for _ in range(20)]


def _with_windowing(clf, windowing: Windowing):
    other = copy.copy(clf)
    other.card_ = replace(clf.card_, windowing=windowing)
    return other


def _baseline_probability(clf, text: str, target: int) -> float:
    """The label's probability for the baseline, computed without bertfit.explain: every non-special token -> [PAD]."""
    import torch

    tok = clf.tokenizer_
    encoded = tok(text, truncation=True, max_length=clf.max_length, return_special_tokens_mask=True)
    ids = [
        i if special else tok.pad_token_id for i, special in zip(encoded["input_ids"], encoded["special_tokens_mask"])
    ]
    with torch.no_grad():
        logits = clf.model_(input_ids=torch.tensor([ids])).logits.numpy()
    return float(clf.decision.probabilities(logits)[0, target])


def test_the_planted_word_dominates_the_attributions(clf, test_texts):
    rng = random.Random(8)
    held_out = test_texts + [_text(rng, trigger=False) for _ in range(20)]
    truth = ["pos"] * 20 + ["neg"] * 20
    accuracy = np.mean([p == t for p, t in zip(clf.predict(held_out), truth)])
    assert accuracy >= 0.95  # the model learned the rule; otherwise there is nothing to explain

    assert explain(clf, test_texts[0]).label == clf.predict(test_texts[0])  # the predicted label by default
    top_for_pos, top_for_neg = 0, 0
    for text in test_texts:
        top = explain(clf, text, "pos").top(1)[0]
        top_for_pos += top.word == TRIGGER and top.score > 0  # raises p(pos)
        neg = explain(clf, text, "neg").top(1)[0]
        top_for_neg += neg.word == TRIGGER and neg.score < 0  # lowers p(neg)
    assert top_for_pos >= 18 and top_for_neg >= 18, (top_for_pos, top_for_neg)


def test_scores_sum_to_the_change_of_probability_from_the_baseline(clf, test_texts):
    for text in test_texts[:5]:
        # The tiny model's output switches within a few percent of the path (its pooler's tanh saturates): an
        # integral that exact needs many points, and the delta says so (about 0.2 at 32 steps, 0.005 at 128).
        explanation = explain(clf, text, steps=512)
        target = clf.labels.index(explanation.label)
        assert explanation.probability == pytest.approx(clf.predict_proba(text)[target], abs=1e-5)
        assert explanation.baseline_probability == pytest.approx(_baseline_probability(clf, text, target), abs=1e-5)
        total = sum(w.score for w in explanation.words)
        change = explanation.probability - explanation.baseline_probability
        assert total - change == pytest.approx(explanation.convergence_delta, abs=1e-5)
        assert abs(explanation.convergence_delta) < 0.02
        assert abs(change) > 0.3  # the planted word moves the probability: a test of something


def test_word_pieces_merge_into_words_that_map_back_to_the_text(clf):
    text = "The ZEBRA,  zebras!\tsee you"
    assert clf.tokenizer_.tokenize("zebras") == ["zeb", "##ra", "##s"]  # three pieces, one word
    explanation = explain(clf, text)
    words = [w.word for w in explanation.words]
    assert words == ["The", "ZEBRA", ",", "zebras", "!", "see", "you"]
    cursor = 0
    for word in explanation.words:
        assert text[word.start : word.end] == word.word
        assert word.start >= cursor and not text[cursor : word.start].strip()  # only whitespace between words
        cursor = word.end
    assert cursor == len(text) and not explanation.truncated and explanation.windows == 1
    assert max(explanation.words, key=lambda w: abs(w.score)).word in ("ZEBRA", "zebras")


def test_chunk_mode_explains_every_window_of_a_long_text(clf):
    rng = random.Random(3)
    text = " ".join(rng.choice(FILLER) for _ in range(40)) + f" {TRIGGER} " + " ".join(rng.sample(FILLER, 3))
    chunked = _with_windowing(clf, Windowing(16, "chunk", stride=4, aggregate="mean"))
    explanation = explain(chunked, text, "pos", steps=512)

    assert explanation.windows > 3 and not explanation.truncated
    assert [w.word for w in explanation.words] == text.split()  # every word, each once, overlaps merged
    assert all(text[w.start : w.end] == w.word for w in explanation.words)
    assert explanation.probability == pytest.approx(chunked.predict_proba(text)[1], abs=1e-5)  # mean of windows
    assert explanation.top(1)[0].word == TRIGGER and explanation.top(1)[0].start == text.index(TRIGGER)
    total = sum(w.score for w in explanation.words)
    assert total - (explanation.probability - explanation.baseline_probability) == pytest.approx(
        explanation.convergence_delta, abs=1e-5
    )
    assert abs(explanation.convergence_delta) < 0.02

    truncated = explain(_with_windowing(clf, Windowing(16)), text, "pos")
    assert truncated.truncated and truncated.windows == 1
    assert len(truncated.words) == 14  # 16 tokens less [CLS] and [SEP]; the trigger was never seen
    assert truncated.probability == pytest.approx(_with_windowing(clf, Windowing(16)).predict_proba(text)[1], abs=1e-5)
    assert "the model saw only the first" in format_explanation(truncated)


def test_a_multi_label_model_is_explained_one_label_at_a_time(clf, test_texts):
    multi = copy.copy(clf)
    multi.card_ = replace(clf.card_, decision=DecisionRule(("neg", "pos"), multi_label=True))
    probs = multi.predict_proba(test_texts[0])  # sigmoid per label
    by_default = explain(multi, test_texts[0])
    assert by_default.label == multi.labels[int(np.argmax(probs))]
    for k, label in enumerate(multi.labels):
        explanation = explain(multi, test_texts[0], label, steps=512)
        assert explanation.probability == pytest.approx(probs[k], abs=1e-5)
        assert explanation.predicted == (probs[k] >= 0.5)
        assert abs(explanation.convergence_delta) < 0.02


class _NotTorch(Predictor):
    """A predictor without a PyTorch model, as an ONNX export is."""

    card_ = ModelCard(DecisionRule(("neg", "pos")), Windowing(16))

    def _logits(self, texts):
        return np.zeros((len(texts), 2))


def test_bad_requests_raise_the_documented_errors(clf, monkeypatch):
    with pytest.raises(ConfigError, match=r"label 'maybe' is not one of the model's labels \['neg', 'pos'\]"):
        explain(clf, "see you", "maybe")
    with pytest.raises(ConfigError, match="steps must be an integer from 1 to 1024, got 0"):
        explain(clf, "see you", steps=0)
    with pytest.raises(ModelError, match="cannot be explained: integrated gradients need the PyTorch model"):
        explain(_NotTorch(), "see you")
    monkeypatch.setitem(sys.modules, "captum", None)  # `import captum` fails
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[explain\]'"):
        explain(clf, "see you")


def test_a_text_without_tokens_gets_no_words(clf):
    explanation = explain(clf, "\u0301")  # a lone combining accent: the lower-casing tokenizer strips it
    assert explanation.words == () and explanation.convergence_delta == pytest.approx(0, abs=1e-6)
    assert explanation.probability == pytest.approx(explanation.baseline_probability)


def test_renderings(clf, test_texts):
    explanation = explain(clf, test_texts[0])
    plain = format_explanation(explanation)
    assert "\x1b[" not in plain and re.search(rf"\+\d\.\d{{4}}  {TRIGGER}\s+chars \d+-\d+", plain), plain
    colored = format_explanation(explanation, color=True)
    assert f"\x1b[30;48;5;46m{TRIGGER}\x1b[0m" in colored  # the strongest word gets the strongest green
    page = explanation_html(explanation)
    assert page.startswith("<!doctype html>") and "://" not in page  # self-contained
    spans = re.findall(r'<span class="word" data-score="([^"]+)"[^>]*>([^<]*)</span>', page)
    assert [word for _, word in spans] == [w.word for w in explanation.words]
    assert re.sub(r"<[^>]+>", "", page.split('<p class="text">')[1]).rstrip().endswith(test_texts[0].split()[-1])
    weird = replace(explanation, text="<b>&", words=())
    assert "&lt;b&gt;&amp;" in explanation_html(weird)  # text is escaped, never markup


def test_cli_explain_prints_json_and_writes_html(zebra_dir, test_texts, tmp_path):
    text = test_texts[0]
    result = CliRunner().invoke(cli_app, ["explain", str(zebra_dir), text, "--steps", "16"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pos (predicted): p=")
    assert result.output.splitlines()[2].split()[1] == TRIGGER  # the first of the top words

    html_file = tmp_path / "why.html"
    result = CliRunner().invoke(
        cli_app, ["explain", str(zebra_dir), text, "--label", "neg", "--json", "--html", str(html_file)]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)  # the coarse-integral warning goes to stderr
    assert body["label"] == "neg" and body["predicted"] is False and body["steps"] == 32
    assert [w["word"] for w in body["words"]] == text.split()
    assert max(abs(w["weight"]) for w in body["words"]) == pytest.approx(1.0)
    assert f">{TRIGGER}</span>" in html_file.read_text(encoding="utf-8")

    result = CliRunner().invoke(cli_app, ["explain", str(zebra_dir), text, "--label", "maybe"])
    assert result.exit_code == 3
    assert "ConfigError: label 'maybe' is not one of the model's labels" in result.output


# -- the server ------------------------------------------------------------------------------------------------------

httpx = pytest.importorskip("httpx")

from test_serve import _chromium_dom, running  # noqa: E402

from bertfit.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def url(clf):
    with running(create_app(clf, max_chars=200)) as base:
        yield base


def test_explain_endpoint_answers_over_http(clf, url, test_texts):
    text = test_texts[1]
    response = httpx.post(f"{url}/explain", json={"text": text}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = explain(clf, text)
    assert body["label"] == "pos" and body["text"] == text
    assert body["probability"] == pytest.approx(expected.probability, abs=1e-6)
    assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == [
        (w.word, w.start, w.end) for w in expected.words
    ]
    assert np.allclose([w["score"] for w in body["words"]], [w.score for w in expected.words], atol=1e-6)
    assert max(body["words"], key=lambda w: abs(w["score"]))["word"] == TRIGGER
    assert httpx.get(f"{url}/info").json()["explain"] is True
    whole = httpx.post(f"{url}/explain", json={"text": text, "steps": 16.0}, timeout=60)  # an integer to JSON Schema
    assert whole.status_code == 200 and whole.json()["steps"] == 16
    assert "/explain" in httpx.get(f"{url}/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"text": "x" * 201}, 422, "text has 201 characters, over the limit of 200"),
        ({"text": " \u200b"}, 422, "text is empty or only whitespace"),
        ({"text": "see you", "label": "maybe"}, 422, 'expected {"text": "a text"}'),
        ({"text": "see you", "steps": 0}, 422, 'expected {"text": "a text"}'),
        ({"text": "see you", "steps": 129}, 422, 'expected {"text": "a text"}'),
        ({"text": "see you", "steps": "5"}, 422, 'expected {"text": "a text"}'),
        ({"text": "see you", "steps": True}, 422, 'expected {"text": "a text"}'),
        ({"texts": ["see you"]}, 422, 'expected {"text": "a text"}'),
    ],
)
def test_bad_explain_requests_get_4xx(url, payload, status, message):
    response = httpx.post(f"{url}/explain", json=payload)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_explain_needs_the_key_when_the_server_has_one(clf):
    with running(create_app(clf, api_key="s3cret")) as base:
        assert httpx.post(f"{base}/explain", json={"text": "see you"}).status_code == 401
        keyed = httpx.post(f"{base}/explain", json={"text": "see you"}, headers={"X-API-Key": "s3cret"}, timeout=60)
        assert keyed.status_code == 200


def test_one_explanation_at_a_time_503_and_504_past_the_timeout(clf, test_texts):
    app = create_app(clf, timeout=0.5)
    with running(app) as base:
        app.state.model_lock.acquire()  # as if predictions or an explanation held the model
        try:
            statuses = asyncio.run(_explain_statuses(base, [{"text": t} for t in test_texts[:2]]))
        finally:
            app.state.model_lock.release()
        assert sorted(statuses) == [503, 504]  # one ran (and timed out waiting), the other was refused at once
        # The timed-out explanation ends on its own and frees its slot: the next one runs.
        assert asyncio.run(_explain_until_ok(base, {"text": test_texts[0]})) == 200


async def _explain_statuses(base: str, payloads: list[dict]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        responses = await asyncio.gather(*(client.post("/explain", json=payload) for payload in payloads))
    return [response.status_code for response in responses]


async def _explain_until_ok(base: str, payload: dict, tries: int = 50) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for _ in range(tries):
            response = await client.post("/explain", json=payload)
            if response.status_code != 503:
                return response.status_code
            await asyncio.sleep(0.1)
    return 503


def test_without_captum_explain_answers_501_and_the_toggle_hides(clf, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "captum", None)
    monkeypatch.setitem(sys.modules, "captum.attr", None)
    with running(create_app(clf)) as base:
        response = httpx.post(f"{base}/explain", json={"text": "see you"})
        assert response.status_code == 501
        assert "pip install 'bertfit[explain]'" in response.json()["detail"]
        assert httpx.get(f"{base}/info").json()["explain"] is False
        assert httpx.post(f"{base}/predict", json={"texts": ["see you"]}).status_code == 200
        dom = _chromium_dom(f"{base}/?text=see%20you&explain=1", tmp_path)
    assert '<label id="explainbox" hidden="">' in dom and 'id="highlighted"' not in dom
    assert '<div id="label">' in dom  # the prediction still shows


def test_an_onnx_like_model_answers_501():
    with running(create_app(_NotTorch())) as base:
        response = httpx.post(f"{base}/explain", json={"text": "see you"})
    assert response.status_code == 501
    assert "cannot be explained" in response.json()["detail"]


def test_page_highlights_the_words_when_explain_is_on(clf, url, test_texts, tmp_path):
    text = test_texts[2]
    dom = _chromium_dom(f"{url}/?text={quote(text)}&explain=1", tmp_path)
    assert '<label id="explainbox">' in dom, dom[-3000:]  # shown: /info said the server can explain
    spans = re.findall(r'<span class="word" data-score="([^"]+)" title="[^"]*" style="[^"]*">([^<]*)</span>', dom)
    assert [word for _, word in spans] == text.split(), dom[-3000:]
    assert max(spans, key=lambda span: abs(float(span[0])))[1] == TRIGGER
    expected = explain(clf, text)
    assert np.allclose([float(score) for score, _ in spans], [w.score for w in expected.words], atol=1e-5)


def test_predictions_and_an_explanation_at_once_all_answer(clf, url, test_texts):
    """Captum hooks the embedding layer during an explanation; the server makes predictions wait for it, so every
    prediction made meanwhile equals one made alone."""
    expected = clf.predict_proba(test_texts)
    results: dict[str, object] = {}

    def explain_one():
        results["explain"] = httpx.post(f"{url}/explain", json={"text": test_texts[0], "steps": 128}, timeout=60)

    thread = threading.Thread(target=explain_one)
    thread.start()
    answers = [
        httpx.post(f"{url}/predict", json={"texts": test_texts[i : i + 4]}, timeout=60) for i in range(0, 20, 4)
    ]
    thread.join(60)
    assert results["explain"].status_code == 200
    got = [list(p["probabilities"].values()) for a in answers for p in a.json()["predictions"]]
    assert np.allclose(got, expected, atol=1e-5)
