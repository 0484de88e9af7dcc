"""The precision check computes the second precision only near the decision boundary, and counts what changes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bertfit import pipeline
from bertfit.decision import DecisionRule
from bertfit.features import Windowing
from bertfit.hardware import Precision


def test_margins_are_the_least_change_that_flips_a_decision():
    probs = np.array([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    assert np.allclose(DecisionRule(("a", "b", "c")).margins(probs), [0.25, 0.025])
    binary = DecisionRule(("ham", "spam"), positive_label="spam", threshold=0.3)
    assert np.allclose(binary.margins(np.array([[0.9, 0.1], [0.6, 0.4]])), [0.2, 0.1])
    multi = DecisionRule(("x", "y"), multi_label=True, thresholds={"x": 0.5, "y": 0.2})
    assert np.allclose(multi.margins(np.array([[0.9, 0.25], [0.45, 0.9]])), [0.05, 0.05])


def _check(monkeypatch, known: np.ndarray, shift, n_round: int = 10, trained: str = "bf16"):
    # Texts "t<i>" whose probabilities at the training precision are ``known``; fp32 moves P(class 1) of text i by
    # shift(i), and any other precision gives ``known``. Returns the check and the texts computed in fp32.
    computed: list[str] = []
    precisions: list[str] = []

    def fake_logits(model, tokenizer, texts, windowing, precision, batch_size):
        precisions.append(precision.name)
        moved = precision.name == "fp32"
        if moved:
            computed.extend(texts)
        p1 = np.array([known[int(t[1:]), 1] + (shift(int(t[1:])) if moved else 0.0) for t in texts])
        return np.log(np.stack([1 - p1, p1], axis=1))  # softmax of log-probabilities: the probabilities

    monkeypatch.setattr(pipeline, "torch_logits", fake_logits)
    monkeypatch.setattr(pipeline, "resolve_precision", lambda name, device=None: Precision("bf16", "cpu"))
    monkeypatch.setattr(pipeline, "PRECISION_CHECK_ROUND", n_round)
    rule = DecisionRule(("neg", "pos"))
    fitted = SimpleNamespace(model=None, tokenizer=None, card=SimpleNamespace(windowing=Windowing(16)))
    validation = SimpleNamespace(decision=rule, probs=known, lexical=None)
    config = SimpleNamespace(eval_batch_size=8)
    texts = [f"t{i}" for i in range(len(known))]
    check = pipeline._precision_check(fitted, config, validation, texts, Precision(trained, "cpu"))
    assert "bf16" not in precisions if trained == "bf16" else "bf16" in precisions  # auto is bf16 here
    return check, computed


def _probs(p1: np.ndarray) -> np.ndarray:
    return np.stack([1 - p1, p1], axis=1)


def test_only_the_texts_near_the_boundary_are_computed(monkeypatch):
    p1 = np.r_[0.47, 0.48, 0.52, 0.53, 0.54, np.full(95, 0.95)]  # 5 texts near 0.5, 95 confident ones
    rng = np.random.default_rng(0).permutation(100)
    known = _probs(p1[rng])
    check, computed = _check(monkeypatch, known, lambda i: 0.003 if abs(known[i, 1] - 0.5) < 0.05 else 0.0)
    assert len(computed) == 10 == check["computed_texts"]  # one round: the next margin is far beyond 4 x 0.003
    assert {f"t{i}" for i in np.flatnonzero(np.abs(known[:, 1] - 0.5) < 0.05)} <= set(computed)
    assert check["texts"] == 100 and check["label_agreement"] == 1.0
    assert check["max_abs_prob_diff"] == pytest.approx(0.003)


def test_a_changed_decision_is_counted(monkeypatch):
    known = _probs(np.r_[0.499, np.full(49, 0.9)])
    check, _ = _check(monkeypatch, known, lambda i: 0.002)  # 0.499 -> 0.501: the decision changes
    assert check["label_agreement"] == pytest.approx(1 - 1 / 50)


def test_large_differences_extend_the_check_to_every_text(monkeypatch):
    known = _probs(np.linspace(0.2, 0.8, 40))
    shift = 0.08 * (-1.0) ** np.arange(40)  # 4x it exceeds the largest margin, 0.3
    check, computed = _check(monkeypatch, known, lambda i: shift[i])
    assert check["computed_texts"] == 40 == len(set(computed))
    rule = DecisionRule(("neg", "pos"))
    same = rule.decide(_probs(known[:, 1] + shift)) == rule.decide(known)
    assert 0 < (~same).sum() < 40 and check["label_agreement"] == pytest.approx(same.mean())


def test_a_run_in_a_third_precision_is_compared_with_fp32_on_every_text(monkeypatch):
    # Trained in fp16 where auto is bf16 (an older GPU's choice forced on a newer one): the evaluation's
    # probabilities are neither side, so fp32 is computed for every text and bf16 near the boundary.
    known = _probs(np.r_[0.499, np.full(49, 0.9)])
    check, computed = _check(monkeypatch, known, lambda i: 0.002, trained="fp16")
    assert len(computed) == 50  # fp32: all of them
    # bf16 gives the fp16 probabilities here, fp32 moves 0.499 across the boundary: one decision differs.
    assert check["label_agreement"] == pytest.approx(1 - 1 / 50)
