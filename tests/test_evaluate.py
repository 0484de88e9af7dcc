from __future__ import annotations

import pytest

from bertfit import DataError
from bertfit.evaluate import collapse_warning, compute_metrics, minority_label

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
