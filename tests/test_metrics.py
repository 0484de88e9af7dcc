from __future__ import annotations

import pytest

from bertfit import DataError
from bertfit.metrics import collapse_warning, compute_metrics, majority_label, minority_label

METRIC_KEYS = {"accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "per_class", "confusion_matrix"}
BINARY_KEYS = {"positive_label", "precision", "recall", "f1", "specificity"}


def test_binary_metrics_by_hand():
    # 6 ham, 4 spam; predicted: 1 ham -> spam (FP), 2 spam -> ham (FN).
    y_true = ["ham"] * 6 + ["spam"] * 4
    y_pred = ["ham"] * 5 + ["spam"] + ["ham"] * 2 + ["spam"] * 2
    m = compute_metrics(y_true, y_pred, ["ham", "spam"], positive_label="spam")
    assert set(m) == METRIC_KEYS | BINARY_KEYS
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["confusion_matrix"] == {"labels": ["ham", "spam"], "matrix": [[5, 1], [2, 2]]}
    assert m["per_class"]["ham"] == {
        "precision": pytest.approx(5 / 7),
        "recall": pytest.approx(5 / 6),
        "f1": pytest.approx(2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6)),
        "support": 6,
    }
    assert m["positive_label"] == "spam"


def test_multiclass_metrics_have_no_binary_keys():
    m = compute_metrics(["a", "b", "c", "c"], ["a", "c", "c", "c"], ["a", "b", "c"])
    assert set(m) == METRIC_KEYS
    assert m["macro_f1"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert m["micro_f1"] == pytest.approx(0.75)
    assert m["per_class"]["b"]["support"] == 1


def test_collapsed_predictions_score_zero_f1_and_are_flagged():
    # The SMS tutorial's failure: 86% accuracy by predicting 'ham' for everything.
    y_true = ["ham"] * 86 + ["spam"] * 14
    y_pred = ["ham"] * 100
    m = compute_metrics(y_true, y_pred, ["ham", "spam"], positive_label="spam")
    assert m["accuracy"] == pytest.approx(0.86)
    assert m["f1"] == 0.0
    warning = collapse_warning(y_true, y_pred)
    assert "predicts 'ham' for every validation text" in warning and "86.0%" in warning
    assert collapse_warning(y_true, ["ham"] * 99 + ["spam"]) is None
    assert collapse_warning(["ham"] * 3, ["ham"] * 3) is None


def test_minority_label_and_bad_positive_label():
    assert minority_label(["ham", "ham", "spam"]) == "spam"
    assert minority_label(["0", "1"]) == "1"
    with pytest.raises(DataError, match="positive label 'yes' is not one of"):
        compute_metrics(["a", "b"], ["a", "b"], ["a", "b"], positive_label="yes")


def test_tune_threshold_finds_the_known_optimum():
    from bertfit.metrics import tune_threshold

    # Ranked: .9 T, .6 F, .4 T, .1 F -> calling the top 3 positive gives F1 = 0.8, the best; cut between .4 and .1.
    assert tune_threshold([False, False, True, True], [0.1, 0.6, 0.4, 0.9]) == (0.25, 0.8)
    truth, scores = [0, 1, 0, 1, 1], [0.1, 0.2, 0.3, 0.8, 0.9]
    assert tune_threshold(truth, scores, "precision>=1.0") == (pytest.approx(0.55), pytest.approx(2 / 3))
    assert tune_threshold(truth, scores, "recall>=1.0") == (pytest.approx(0.15), pytest.approx(0.75))
    assert tune_threshold([0, 0], [0.3, 0.7]) == (0.5, 0.0)  # no positive text: keep 0.5


def test_tune_threshold_on_synthetic_scores_beats_half():
    import numpy as np

    from bertfit.metrics import tune_threshold

    rng = np.random.default_rng(0)
    truth = rng.random(2000) < 0.1  # 10% positive
    scores = np.clip(np.where(truth, 0.35, 0.15) + rng.normal(0, 0.08, 2000), 0, 1)  # a model that under-scores
    threshold, f1 = tune_threshold(truth, scores)
    f1_at = lambda t: 2 * (truth & (scores >= t)).sum() / ((scores >= t).sum() + truth.sum())  # noqa: E731
    assert 0.2 < threshold < 0.3 and f1 == pytest.approx(f1_at(threshold))
    assert f1 > f1_at(0.5) + 0.3
    grid = max(f1_at(t) for t in np.linspace(0.01, 0.99, 99))
    assert f1 >= grid - 1e-12  # no fixed grid does better


def test_tune_threshold_rejects_unknown_objectives():
    from bertfit import ConfigError
    from bertfit.metrics import tune_threshold

    with pytest.raises(ConfigError, match="threshold objective must be"):
        tune_threshold([True], [0.5], "auc")


def test_a_model_no_better_than_the_majority_class_is_flagged():
    y_true = ["ham"] * 90 + ["spam"] * 10
    # Not collapsed (two classes predicted), but random guesses: macro-F1 below always saying 'ham'.
    noisy = ["spam" if i % 2 else "ham" for i in range(100)]
    warning = collapse_warning(y_true, noisy, majority=majority_label(y_true))
    assert warning.startswith("NO BETTER THAN THE MAJORITY CLASS") and "predicting 'ham' for every text" in warning
    assert "--lr" in warning
    good = ["ham"] * 88 + ["spam"] * 2 + ["spam"] * 8 + ["ham"] * 2
    assert collapse_warning(y_true, good, majority="ham") is None
    assert collapse_warning(y_true, noisy) is None  # no majority given: only a one-class collapse is flagged


def test_majority_comparison_for_label_sets():
    y_true = [("joy",)] * 6 + [("joy", "love")] * 2 + [("anger",)] * 2
    assert majority_label(y_true) == ("joy",)
    wrong = [("anger",)] * 5 + [("love",)] * 5
    warning = collapse_warning(y_true, wrong, majority=("joy",))
    assert "micro-F1" in warning and "the label set ['joy']" in warning
    assert collapse_warning(y_true, y_true, majority=("joy",)) is None


def test_a_binary_threshold_needs_enough_texts_of_each_class():
    from bertfit.metrics import tune_binary_threshold

    # 9 positives: too few, though their threshold would look perfect on these texts.
    truth, scores = [True] * 9 + [False] * 40, [0.4] * 9 + [0.1] * 40
    threshold, value, reason = tune_binary_threshold(truth, scores)
    assert (threshold, value) == (0.5, 0.0)
    assert reason == "validation holds 9 positive and 40 negative texts; a threshold is tuned on at least 10 of each"


def test_a_binary_threshold_within_the_noise_keeps_half():
    from bertfit.metrics import threshold_gain, tune_binary_threshold

    # A good model on 30 texts: tuning moves the cut under one positive at 0.45 and one negative at 0.47.
    truth = [True] * 15 + [False] * 15
    scores = [0.9] * 14 + [0.45] + [0.1] * 14 + [0.47]
    gain, error = threshold_gain(truth, scores, 0.275)  # between 0.45 and the next lower score
    assert gain == pytest.approx(30 / 31 - 28 / 29) and gain < 2 * error
    threshold, value, reason = tune_binary_threshold(truth, scores)
    assert threshold == 0.5 and value == pytest.approx(28 / 29)
    assert reason.startswith("the tuned threshold 0.2750 gains +0.0022 F1 over 0.5, not above the noise of 30")


def test_a_clear_gain_keeps_the_tuned_threshold():
    import numpy as np

    from bertfit.metrics import tune_binary_threshold

    # A model that under-scores the positive class: 0.5 calls no text positive, a lower cut separates them.
    rng = np.random.default_rng(0)
    truth = np.arange(100) < 50
    scores = np.where(truth, 0.3, 0.1) + rng.uniform(0, 0.1, 100)
    threshold, value, reason = tune_binary_threshold(truth, scores)
    assert reason is None and 0.2 <= threshold <= 0.3 and value == 1.0
    # A precision floor that 0.5 misses: the threshold that meets it is kept (what was asked for).
    noisy = np.where(np.arange(100) % 10 == 0, 0.6, scores)  # 5 negatives above 0.5 as well as 5 positives
    threshold, value, reason = tune_binary_threshold(truth, noisy, "precision>=0.9")
    assert reason is None and threshold < 0.5 and value >= 0.9
    assert tune_binary_threshold(truth, scores, "precision>=1.01")[2].startswith("no threshold reaches")
