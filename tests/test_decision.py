"""The decision rule: one decide() behind every row that predict, the server, batch engines and the report write."""

from __future__ import annotations

import numpy as np
import pytest

from bertfit.decision import DecisionRule

PROBS = np.array([[0.7, 0.3], [0.45, 0.55], [0.2, 0.8]])


def test_kinds_of_rule():
    assert DecisionRule(("a", "b")).kind == "argmax"
    assert DecisionRule(("a", "b"), positive_label="b", threshold=0.6).kind == "binary threshold"
    assert DecisionRule(("a", "b", "c"), threshold=0.6).kind == "argmax"  # a threshold needs two labels
    assert DecisionRule(("a", "b"), multi_label=True).kind == "per-label thresholds"


def test_every_row_format_follows_the_same_decisions():
    rule = DecisionRule(("ham", "spam"), positive_label="spam", threshold=0.6)
    assert rule.predict(PROBS) == ["ham", "ham", "spam"]  # 0.55 is below the threshold
    rows = rule.rows(["t0", "t1", "t2"], PROBS)
    assert [r["label"] for r in rows] == ["ham", "ham", "spam"] and rows[1]["score"] == pytest.approx(0.45)
    assert list(rows[0]) == ["text", "label", "score", "prob_ham", "prob_spam"]
    records = rule.records(["t0", "t1", "t2"], ["ham", "spam", "spam"], PROBS)
    assert list(records[0]) == ["text", "true_label", "label", "score", "prob_ham", "prob_spam"]
    assert [r["label"] for r in records] == ["ham", "ham", "spam"]
    assert rule.response(PROBS[1]) == {"label": "ham", "score": 0.45, "probabilities": {"ham": 0.45, "spam": 0.55}}
    columns = rule.columns(PROBS)
    assert columns["label"].tolist() == ["ham", "ham", "spam"] and columns["prob_spam"].tolist() == [0.3, 0.55, 0.8]
    assert rule.untuned().predict(PROBS) == ["ham", "spam", "spam"]


def test_multi_label_rows_hold_label_sets():
    rule = DecisionRule(("joy", "love"), multi_label=True, thresholds={"love": 0.25})
    assert rule.predict(PROBS) == [["joy", "love"], ["love"], ["love"]]
    assert rule.rows(["a"], PROBS[:1]) == [{"text": "a", "labels": ["joy", "love"], "prob_joy": 0.7, "prob_love": 0.3}]
    assert rule.records(["a"], [("joy",)], PROBS[:1])[0]["true_labels"] == ["joy"]
    assert rule.response(np.array([0.1, 0.2]))["labels"] == []  # no label reaches its threshold: none is forced
    assert rule.columns(PROBS)["labels"].tolist() == [["joy", "love"], ["love"], ["love"]]
    np.testing.assert_allclose(rule.probabilities(np.array([[0.0, 2.0]])), [[0.5, 1 / (1 + np.exp(-2))]])


def test_rule_round_trips_through_bertfit_json_entries():
    rule = DecisionRule(("a", "b"), positive_label="b", threshold=0.4)
    info = {"labels": ["a", "b"], "multi_label": False, **rule.to_info()}
    assert DecisionRule.from_info(info) == rule
    assert "threshold" not in DecisionRule(("a", "b")).to_info()
