"""The lexical head: TF-IDF + logistic regression averaged with the encoder (bertfit.lexical), and epochs' automatic
choice for long documents."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sentiment_rows
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from bertfit import ModelError, TextClassifier, train
from bertfit.calibration import reliability
from bertfit.data import TextDataset
from bertfit.lexical import LEXICAL_FILES, fit_lexical, fit_lexical_head, fusion_gain, keep_reason, load_lexical
from bertfit.model import load_classifier

TOPICS = {
    "sport": ["goal", "match", "team", "coach", "league"],
    "space": ["orbit", "rocket", "planet", "nasa", "moon"],
    "cars": ["engine", "wheel", "brake", "dealer", "sedan"],
}


def _topic_rows(n: int = 90, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = list(TOPICS)[i % 3]
        words = list(rng.choice(TOPICS[label], 3)) + list(rng.choice(["the", "a", "of", "and", "is"], 3))
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    return texts, labels


@pytest.mark.parametrize("n_classes", [2, 3])
def test_head_probabilities_equal_sklearns_tfidf_and_logistic_regression(n_classes):
    texts, labels = _topic_rows()
    keep = [i for i, label in enumerate(labels) if label in list(TOPICS)[:n_classes]]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    order = sorted(set(labels), reverse=True)  # the head follows the model's label order, not sklearn's
    head = fit_lexical(texts, labels, order)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2, token_pattern=r"(?u)\b\w+\b")
    features = vectorizer.fit_transform(texts)
    reference = LogisticRegression(max_iter=1000, class_weight="balanced").fit(features, labels)
    unseen = ["rocket goal and the moon", "brake dealer", "nothing known here"]
    expected = reference.predict_proba(vectorizer.transform(unseen))[
        :, [list(reference.classes_).index(c) for c in order]
    ]
    np.testing.assert_allclose(head.probabilities(unseen), expected, atol=1e-5)


@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2), (1, 3), (2, 2)])
def test_terms_are_sklearns_word_ngrams(ngram_range):
    from sklearn.feature_extraction.text import CountVectorizer

    from bertfit.lexical import _terms

    analyzer = CountVectorizer(ngram_range=ngram_range, token_pattern=r"(?u)\b\w+\b").build_analyzer()
    for text in ["", "one", "Win CASH now!!", "ÀÉÎ Straße naïve U 2 b", "a b a b a", "it's re-done; 3.5x"]:
        assert _terms(text, ngram_range) == analyzer(text), text


def test_saved_head_reads_back_equal_and_refuses_a_mismatch(tmp_path):
    texts, labels = _topic_rows()
    head = fit_lexical(texts, labels, list(TOPICS))
    head.temperature = 0.25
    head.save(tmp_path)
    loaded = load_lexical(tmp_path, list(TOPICS))
    probe = ["rocket goal", "the engine of the sedan", ""]
    np.testing.assert_array_equal(loaded.probabilities(probe), head.probabilities(probe))
    assert loaded.temperature == 0.25 and loaded.vocabulary == head.vocabulary
    (tmp_path / "plain").mkdir()
    assert load_lexical(tmp_path / "plain", list(TOPICS)) is None  # a model without a head
    with pytest.raises(ModelError, match="does not match the model"):
        load_lexical(tmp_path, ["a", "b", "c"])
    (tmp_path / LEXICAL_FILES[1]).unlink()
    with pytest.raises(ModelError, match="but not the rest"):
        load_lexical(tmp_path, list(TOPICS))


def test_fusion_gain_is_paired_and_the_keep_rule_needs_more_than_noise():
    truth = np.array([0, 1] * 50)
    right = np.eye(2)[truth] * 0.8 + 0.1
    wrong = np.eye(2)[1 - truth] * 0.8 + 0.1
    encoder, fused, gain, error = fusion_gain(truth, right, right, "accuracy")
    assert (encoder, fused, gain, error) == (1.0, 1.0, 0.0, 0.0)
    half = np.where((np.arange(100) < 50)[:, None], right, wrong)  # right on half the texts
    encoder, fused, gain, error = fusion_gain(truth, half, right, "macro_f1")
    assert encoder == pytest.approx(0.5) and fused == 1.0 and gain == pytest.approx(0.5) and 0 < error < 0.1
    assert keep_reason(gain, error, 100, "macro_f1")[0]
    kept, reason = keep_reason(0.01, 0.01, 100, "macro_f1")
    assert not kept and "not above the noise of 100 validation texts" in reason


def test_the_average_gets_a_temperature_of_its_own_that_keeps_its_argmax(tmp_path):
    texts, labels = _topic_rows(150)
    rng = np.random.default_rng(0)
    # A fifth of the validation labels are wrong, so that nothing predicts all of them right.
    noisy = [list(TOPICS)[rng.integers(3)] if rng.random() < 0.2 else label for label in labels[90:]]
    train_ds, val_ds = TextDataset(texts[:90], labels[:90]), TextDataset(texts[90:], noisy)
    order = list(TOPICS)
    truth = np.array([order.index(label) for label in val_ds.labels])
    # An encoder that is right on 70% of the texts and always 55% sure: underconfident where it is right.
    guess = np.where(rng.random(len(truth)) < 0.7, truth, (truth + 1) % 3)
    encoder = np.full((len(truth), 3), 0.225) + 0.325 * np.eye(3)[guess]
    head, fusion, fused = fit_lexical_head(train_ds, val_ds, order, encoder, "macro_f1", "on")
    plain, _, _ = fit_lexical_head(train_ds, val_ds, order, encoder, "macro_f1", "on", calibrate=False)
    assert plain.fused_temperature == 1.0 and head.fused_temperature == fusion.temperature != 1.0
    average = plain.fuse(encoder, val_ds.texts)
    np.testing.assert_array_equal(fused.argmax(axis=1), average.argmax(axis=1))
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert fusion.ece_after < fusion.ece_before == reliability(average, truth, multi_label=False).ece
    head.save(tmp_path)
    assert load_lexical(tmp_path, order).fused_temperature == head.fused_temperature


def _long_rows(n: int = 60) -> TextDataset:
    # Topic texts whose topic words sit past the first window: the encoder, cut at 8 tokens, sees filler only.
    texts, labels = _topic_rows(n)
    return TextDataset(["the film was a the plot is " + text for text in texts], labels)


def test_a_kept_head_is_saved_and_every_prediction_averages_it_in(tiny_config, tmp_path):
    out = tmp_path / "model"
    data = TextDataset(*_topic_rows())
    clf = train(tiny_config(epochs=1, lexical="on", output_dir=str(out), max_length=8, baselines=True), data)
    info = json.loads((out / "bertfit.json").read_text())
    assert info["lexical"]["kept"] is True and info["lexical"]["mode"] == "on" and info["lexical"]["terms"] > 10
    assert all((out / name).is_file() for name in LEXICAL_FILES)
    texts = ["rocket and moon", "the coach of the team", "a brake"]
    loaded = load_classifier(out)
    np.testing.assert_allclose(loaded.predict_proba(texts), clf.predict_proba(texts), atol=1e-6)
    encoder = loaded.decision.probabilities(loaded._logits(texts))
    average = 0.5 * encoder + 0.5 * loaded.lexical_.probabilities(texts)
    expected = average ** (1 / loaded.lexical_.fused_temperature)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loaded.predict_proba(texts), expected, atol=1e-9)
    assert info["lexical"]["temperature"] == loaded.lexical_.fused_temperature
    # The saved validation records are the averaged probabilities, and so are the metrics.
    assert loaded.predict(texts) == clf.predict(texts)
    page = (out / "report.html").read_text()
    assert ">fine-tuned model + lexical head" in page and "a temperature of its own" in page
    card = (out / "README.md").read_text()  # the Hub card says what a plain pipeline misses
    assert "it gives the encoder's probabilities only" in card
    again = tmp_path / "copy"
    TextClassifier.from_pretrained(out).save_pretrained(again)
    assert all((again / name).is_file() for name in LEXICAL_FILES)


def test_off_fits_no_head_and_auto_records_why(tiny_config, tmp_path):
    rows = sentiment_rows()
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    off = train(tiny_config(epochs=1, lexical="off", output_dir=str(tmp_path / "off")), data)
    assert off.lexical_ is None and off.card.training.lexical is None
    assert not any((tmp_path / "off" / name).exists() for name in LEXICAL_FILES)
    auto = train(tiny_config(epochs=1, output_dir=str(tmp_path / "auto")), data)
    fusion = auto.card.training.lexical
    assert fusion.mode == "auto" and "validation texts" in fusion.reason
    assert (auto.lexical_ is not None) == fusion.kept == (tmp_path / "auto" / LEXICAL_FILES[0]).is_file()


def test_multi_label_tasks_fit_no_head(tiny_config):
    texts, labels = _topic_rows()
    data = TextDataset(texts, [[label] if i % 4 else [label, "sport"] for i, label in enumerate(labels)])
    clf = train(tiny_config(epochs=1, lexical="on", metric_for_best_model="micro_f1"), data)
    assert clf.lexical_ is None and clf.card.training.lexical is None


@pytest.mark.parametrize(("max_length", "epochs"), [(8, 3), (64, 4)])
def test_epochs_default_to_fewer_for_long_documents(tiny_config, max_length, epochs):
    clf = train(tiny_config(epochs=None, max_length=max_length, lexical="off"), _long_rows())
    assert clf.card.training.config["epochs"] == epochs
    assert clf.card.training.history[-1]["epoch"] == epochs
