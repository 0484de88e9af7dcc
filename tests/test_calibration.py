"""Temperature scaling: the fit, ECE, the saved temperature in every prediction path, and old cards."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_TRAINING, sentiment_rows, write_csv
from scipy.special import expit, softmax
from typer.testing import CliRunner

from bertfit import ModelError, TextClassifier, TrainConfig, train
from bertfit.calibration import (
    ECE_BINS,
    MIN_TEXTS_TO_CALIBRATE,
    calibrate,
    fit_temperature,
    negative_log_likelihood,
    reliability,
)
from bertfit.card import CARD_FILE, ModelCard
from bertfit.cli import app
from bertfit.data import TextDataset
from bertfit.decision import DecisionRule
from bertfit.evaluate import write_report


def _calibrated_single_label(n: int = 10000, k: int = 3, seed: int = 0):
    # Logits whose softmax is the true label distribution: labels are drawn from it.
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    cumulative = softmax(logits, axis=1).cumsum(axis=1)  # (n, k)
    return logits, np.minimum((rng.random((n, 1)) > cumulative).sum(axis=1), k - 1)


def _calibrated_multi_label(n: int = 5000, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, k))
    return logits, (rng.random((n, k)) < expit(logits)).astype(np.int8)


# -- the fit and ECE -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_fit_recovers_a_known_temperature(multi_label, scale):
    logits, targets = (_calibrated_multi_label if multi_label else _calibrated_single_label)()
    temperature, kept = fit_temperature(logits * scale, targets, multi_label)  # over- (3) or underconfident (0.5)
    assert kept is None
    assert temperature == pytest.approx(scale, rel=0.1)
    nll = negative_log_likelihood(logits * scale, targets, multi_label, temperature)
    assert nll < negative_log_likelihood(logits * scale, targets, multi_label)
    assert nll == pytest.approx(negative_log_likelihood(logits, targets, multi_label), abs=0.01)


@pytest.mark.parametrize("multi_label", [False, True])
def test_ece_is_about_zero_when_calibrated_and_high_when_overconfident(multi_label):
    logits, targets = (_calibrated_multi_label if multi_label else _calibrated_single_label)()
    rule = DecisionRule(("a", "b", "c", "d")[: logits.shape[1]], multi_label=multi_label)
    calibrated = reliability(rule.probabilities(logits), targets, multi_label)
    overconfident = reliability(rule.probabilities(logits * 4), targets, multi_label)
    assert calibrated.ece < 0.025
    assert overconfident.ece > 0.1
    assert len(calibrated.counts) == ECE_BINS
    assert sum(calibrated.counts) == (logits.size if multi_label else len(logits))
    # Bins: accuracy tracks confidence when calibrated, falls short of it in the top bin when overconfident.
    assert overconfident.accuracy[-1] < overconfident.confidence[-1] - 0.05


def test_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.3, 0.7], [0.3, 0.7]])
    result = reliability(probs, np.array([0, 1, 1, 1]), multi_label=False)
    # Bin of 0.95: two texts, one right (|0.5 - 0.95|); bin of 0.7: two texts, both right (|1 - 0.7|).
    assert result.ece == pytest.approx((2 * 0.45 + 2 * 0.3) / 4)
    assert result.counts[14] == 2 and result.counts[10] == 2 and result.confidence[0] is None
    labels = reliability(np.array([[0.9, 0.1]]), np.array([[1, 1]]), multi_label=True)  # every label's probability
    assert labels.ece == pytest.approx((0.1 + 0.9) / 2)


def test_too_few_texts_or_no_lower_nll_keep_one():
    logits, targets = _calibrated_single_label()
    temperature, kept = fit_temperature(logits[:20] * 3, targets[:20], multi_label=False)
    assert temperature == 1.0 and f"20 texts; a temperature is fitted on at least {MIN_TEXTS_TO_CALIBRATE}" in kept
    flat = np.zeros((200, 3))  # every T gives the same NLL: no signal
    temperature, kept = fit_temperature(flat, targets[:200], multi_label=False)
    assert temperature == 1.0 and "keeps falling to the search bound T = 20" in kept
    # Right on 3 in 4 texts at probability 0.75: calibrated already, the best T is 1 (to the 4 digits it is fitted to).
    calibrated = np.tile([np.log(3.0), 0.0], (200, 1))
    temperature, kept = fit_temperature(calibrated, np.array([0, 0, 0, 1] * 50), multi_label=False)
    assert temperature == 1.0 and "does not lower the validation NLL" in kept
    separated = 4.0 * np.eye(3)[targets[:200]]  # every text right: the sharper the better, towards T = 0
    temperature, kept = fit_temperature(separated, targets[:200], multi_label=False)
    assert temperature == 1.0 and "all validation texts are predicted right" in kept
    one_hot = np.eye(3)[targets[:200]]
    temperature, kept = fit_temperature(8 * one_hot - 4, one_hot, multi_label=True)
    assert temperature == 1.0 and "every label of every validation text is predicted right" in kept
    temperature, kept = fit_temperature(np.full((200, 3), np.nan), targets[:200], multi_label=False)
    assert temperature == 1.0 and kept


def test_calibrate_measures_before_and_after_and_can_be_turned_off():
    logits, targets = _calibrated_single_label()
    rule = DecisionRule(("a", "b", "c"))
    names = [rule.labels[k] for k in targets]
    fitted = calibrate(logits * 3, names, rule)
    assert fitted.temperature == pytest.approx(3, rel=0.1) and fitted.kept is None and fitted.texts == len(logits)
    assert fitted.after.ece < 0.025 < 0.1 < fitted.before.ece and fitted.nll_after < fitted.nll_before
    off = calibrate(logits * 3, names, rule, enabled=False)
    assert off.temperature == 1.0 and "--no-calibrate" in off.kept and off.after == off.before == fitted.before


def test_temperature_never_changes_an_argmax_or_a_multi_label_decision_at_half():
    logits = np.random.default_rng(1).normal(scale=3, size=(500, 4))
    for multi_label in (False, True):
        rule = DecisionRule(("a", "b", "c", "d"), multi_label=multi_label)
        hot = DecisionRule(rule.labels, multi_label=multi_label, temperature=2.7)
        assert (rule.decide(rule.probabilities(logits)) == hot.decide(hot.probabilities(logits))).all()
        expected = expit(logits / 2.7) if multi_label else softmax(logits / 2.7, axis=1)
        np.testing.assert_allclose(hot.probabilities(logits), expected, rtol=1e-12)


# -- the model card ------------------------------------------------------------------------------------------------


def test_an_old_card_without_temperature_loads_uncalibrated(trained_dir, tmp_path):
    card = ModelCard.from_info({"labels": ["a", "b"], "max_length": 128})
    assert card.decision.temperature == 1.0 and card.to_info()["temperature"] == 1.0
    old = tmp_path / "old"
    shutil.copytree(trained_dir, old)
    info = json.loads((old / CARD_FILE).read_text())
    info.pop("calibration")
    info.pop("temperature")
    info["temperature_was_never_here"] = True  # unknown entries are ignored as before
    (old / CARD_FILE).write_text(json.dumps(info))
    clf = TextClassifier.from_pretrained(old)
    assert clf.decision.temperature == 1.0 and clf.card.training.calibration is None
    with torch.no_grad():
        logits = clf.model_(**clf.tokenizer_("the film was good", return_tensors="pt")).logits[0].numpy()
    np.testing.assert_allclose(clf.predict_proba("the film was good"), softmax(logits), rtol=1e-5, atol=1e-6)
    for bad in (0, -1.5, "2", None):
        with pytest.raises(ModelError, match="temperature .* not a positive number"):
            ModelCard.from_info({"labels": ["a", "b"], "max_length": 128, "temperature": bad})


# -- training ------------------------------------------------------------------------------------------------------


def _splits():
    # 60 validation texts: enough for a temperature (MIN_TEXTS_TO_CALIBRATE); every 6th has the wrong label, so that
    # the model cannot get them all right (which would leave no temperature to fit).
    train_rows = sentiment_rows(120)
    flip = {"pos": "neg", "neg": "pos"}
    val_rows = [(t, flip[lab] if i % 6 == 0 else lab) for i, (t, lab) in enumerate(sentiment_rows(60, seed=1))]
    as_dataset = lambda rows: TextDataset([t for t, _ in rows], [lab for _, lab in rows])  # noqa: E731
    return as_dataset(train_rows), as_dataset(val_rows)


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory):
    """A model trained with 60 validation texts and argmax decisions: (classifier, saved directory). Without the
    lexical head: these tests check the encoder's temperature (the head's average is tested in test_lexical.py)."""
    out = tmp_path_factory.mktemp("calibrated") / "model"
    options = {**TINY_TRAINING, "threshold_metric": "none", "lexical": "off"}  # 5 epochs: 2 collapse on some seeds
    config = TrainConfig(model_name_or_path=str(tiny_model_dir), output_dir=str(out), **options)
    return train(config, *_splits()), out


def test_a_trained_model_saves_its_temperature_and_predicts_with_it(calibrated):
    clf, out = calibrated
    info = json.loads((out / CARD_FILE).read_text())
    temperature = info["temperature"]
    assert temperature != 1.0 and info["calibration"]["temperature"] == temperature
    assert info["calibration"]["texts"] == 60 and info["calibration"]["kept"] is None
    assert info["calibration"]["nll_after"] < info["calibration"]["nll_before"]
    loaded = TextClassifier.from_pretrained(out)
    assert loaded.decision.temperature == temperature and loaded.decision.kind == "argmax"
    texts = ["the film was good", "bad", "this movie is very very boring and the plot is poor", "it was quite"]
    probs = loaded.predict_proba(texts)
    with torch.no_grad():
        for text, row, label in zip(texts, probs, loaded.predict(texts)):  # one text at a time: no padding
            logits = loaded.model_(**loaded.tokenizer_(text, return_tensors="pt")).logits[0].numpy()
            np.testing.assert_allclose(row, softmax(logits / temperature), rtol=1e-5, atol=1e-6)
            assert label == loaded.labels[int(np.argmax(logits))]  # the raw logits' argmax: unchanged
    np.testing.assert_allclose(clf.predict_proba(texts), probs, rtol=1e-5, atol=1e-6)


def test_the_validation_records_and_report_are_calibrated(calibrated, tmp_path):
    clf, out = calibrated
    calibration = clf.card.training.calibration
    records = [json.loads(line) for line in (out / "validation_predictions.jsonl").read_text().splitlines()]
    val = _splits()[1]
    np.testing.assert_allclose(
        [[r["prob_neg"], r["prob_pos"]] for r in records], clf.predict_proba(val.texts), atol=1e-4
    )  # the records, the report and the saved ECE are of the calibrated probabilities
    targets = np.array([clf.labels.index(y) for y in val.labels])
    ece = reliability(clf.predict_proba(val.texts), targets, multi_label=False).ece
    assert ece == pytest.approx(calibration.after.ece, abs=1e-3)
    page = (out / "report.html").read_text()
    assert 'id="calibration"' in page and f"T = {calibration.temperature:g}" in page
    assert f"{calibration.after.ece:.4f}" in page and f"{calibration.before.ece:.4f}" in page
    data = write_csv(tmp_path / "other.csv", sentiment_rows(30, seed=2))
    rebuilt = write_report(out, data, tmp_path / "other.html").read_text()
    assert f"On {data}" in rebuilt and "over 30 texts" in rebuilt


def test_no_calibrate_keeps_one(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "train.csv", sentiment_rows(120))
    val = write_csv(tmp_path / "val.csv", sentiment_rows(60, seed=1))
    out = tmp_path / "model"
    flags = ["--epochs", "1", "--batch-size", "8", "--lr", "5e-3", "--precision", "fp32", "--no-baselines"]
    result = CliRunner().invoke(
        app,
        ["train", "--data", str(data), "--validation", str(val), "--model", str(tiny_model_dir)]
        + ["--output-dir", str(out), "--no-calibrate", *flags],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / CARD_FILE).read_text())
    assert info["temperature"] == 1.0 and info["config"]["calibrate"] is False
    assert "--no-calibrate" in info["calibration"]["kept"]
    assert info["calibration"]["before"] == info["calibration"]["after"]
    assert "temperature 1 (kept at 1: calibration is turned off" in result.output
    assert TrainConfig.from_dict({"calibrate": "no"}).calibrate is False and TrainConfig().calibrate is True


def test_onnx_exports_and_the_server_predict_with_the_temperature(calibrated, tmp_path):
    clf, out = calibrated
    temperature = clf.decision.temperature
    texts = ["the film was superb", "it was quite", "the plot is really awful"]
    httpx = pytest.importorskip("httpx")
    from test_serve import running

    from bertfit.serve import create_app

    with running(create_app(clf)) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": texts}).json()["predictions"]
        info = httpx.get(f"{base}/info").json()
    assert info["temperature"] == temperature
    served = [list(p["probabilities"].values()) for p in predictions]
    np.testing.assert_allclose(served, clf.predict_proba(texts), rtol=1e-5, atol=1e-6)
    pytest.importorskip("onnxruntime")
    from bertfit.export import export_onnx
    from bertfit.model import load_classifier

    export_onnx(out, tmp_path / "onnx")
    exported = load_classifier(tmp_path / "onnx")
    assert exported.decision.temperature == temperature
    raw = exported._logits(texts)  # the graph's logits: the temperature is applied after it, by the card
    np.testing.assert_allclose(exported.predict_proba(texts), softmax(raw / temperature, axis=1), rtol=1e-6)
    np.testing.assert_allclose(exported.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)
