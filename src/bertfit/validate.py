"""The validation stage: score the trained model on validation, tune its decision, check it, and fit the baselines.

After training stops at the best state, :func:`validate` takes that state's logits of every validation text (from
the evaluation that chose it: no second pass), fits the temperature that calibrates its probabilities
(:mod:`bertfit.calibration`), fits the lexical head and averages it in where it pays (:mod:`bertfit.lexical`), tunes
the decision threshold (binary tasks) or one threshold per label (multi-label
tasks) on the calibrated probabilities, computes the final metrics at the tuned decision, builds the per-text
records the report is made of, warns when the model collapsed or is no better than the majority class, and fits the
baselines on the same split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .calibration import Calibration, calibrate
from .card import ThresholdTuning
from .config import TrainConfig
from .data import TextDataset
from .decision import DecisionRule, multi_hot
from .exceptions import BertfitError
from .lexical import Fusion, LexicalHead, fit_lexical_head
from .metrics import (
    MIN_POSITIVES_TO_TUNE,
    collapse_warning,
    compute_metrics,
    majority_label,
    multi_label_metrics,
    tune_binary_threshold,
    tune_thresholds,
)

__all__ = ["Validation", "validate", "tune_decision"]

logger = logging.getLogger(__name__)

_BINARY_AT_HALF = ("accuracy", "macro_f1", "precision", "recall", "f1", "specificity")
_MULTI_LABEL_AT_HALF = ("accuracy", "micro_f1", "macro_f1", "samples_f1", "hamming_loss")


@dataclass
class Validation:
    """The validation stage's results: the tuned decision, final metrics, per-text records, warnings, baselines."""

    decision: DecisionRule
    metrics: dict[str, Any]
    records: list[dict[str, Any]]
    seconds: float
    probs: np.ndarray  # (n_validation, n_labels)
    tuning: ThresholdTuning | None = None
    warnings: list[str] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] | None = None
    calibration: Calibration | None = None
    lexical: LexicalHead | None = None  # kept: every prediction averages it in
    fusion: Fusion | None = None  # how the lexical head did on validation (None: not tried)


def validate(
    logits: np.ndarray,
    decision: DecisionRule,
    config: TrainConfig,
    train: TextDataset,
    validation: TextDataset,
    max_length: int,
    *,
    seconds: float = 0.0,
    embeddings: tuple[np.ndarray, np.ndarray, float] | None = None,
) -> Validation:
    """Score, tune and check a trained model on ``validation``.

    Args:
        logits: The trained model's logits of the validation texts, ``(n_validation, n_labels)``.
        decision: The untuned decision rule (labels, task kind, positive label).
        config: The run's options (``threshold_metric``, ``baselines``, ...).
        train: The training split (for the majority class and the baselines).
        validation: The validation split.
        max_length: The model's window size (the frozen-embedding baseline truncates there).
        seconds: How long predicting the validation texts took.
        embeddings: The frozen-embedding baseline's features, if computed already (see
            :func:`bertfit.baseline.frozen_embeddings`).
    """
    # The temperature first: thresholds are tuned on the probabilities the saved model will give.
    calibration = calibrate(logits, validation.labels, decision, enabled=config.calibrate)
    decision = replace(decision, temperature=calibration.temperature)
    probs = decision.probabilities(logits)  # (n_validation, n_labels)
    encoder_probs = probs
    head, fusion, fused = None, None, None
    if config.lexical != "off" and not decision.multi_label:
        metric = config.metric_for_best_model
        head, fusion, fused = fit_lexical_head(
            train, validation, decision.labels, probs, metric, config.lexical, calibrate=config.calibrate
        )
        if fusion.kept:
            probs = fused
    decision, tuning = tune_decision(decision, config.threshold_metric, validation.labels, probs)
    metrics = compute_metrics(
        validation.labels, decision.predict(probs), list(decision.labels), decision.positive_label
    )
    # Collapse is a property of the encoder, not of a threshold tuned to split its near-constant scores (nor of the
    # lexical head averaged in): untuned, the encoder's own probabilities.
    untuned = decision.untuned().predict(encoder_probs)
    warning = collapse_warning(validation.labels, untuned, majority=majority_label(train.labels))
    if warning:
        logger.warning(warning)
    return Validation(
        decision=decision,
        metrics=metrics,
        records=decision.records(validation.texts, validation.labels, probs),
        seconds=round(seconds, 2),
        probs=probs,
        tuning=tuning,
        warnings=[warning] if warning else [],
        calibration=calibration,
        baselines=_baselines(config, train, validation, decision.positive_label, max_length, embeddings, head, fusion)
        if config.baselines
        else None,
        lexical=head if fusion is not None and fusion.kept else None,
        fusion=fusion,
    )


def tune_decision(
    decision: DecisionRule, objective: str, y_true: list, probs: np.ndarray
) -> tuple[DecisionRule, ThresholdTuning | None]:
    """The decision with its threshold(s) tuned on ``probs`` for ``objective`` (see ``--threshold-metric``), and how;
    ``decision`` as it is when there is nothing to tune (``objective`` none, or several classes).

    A binary threshold stays at 0.5 (saved as 0.5: the most probable label) when validation is too small or the
    tuned one does not beat 0.5 by more than the noise (see :func:`bertfit.metrics.tune_binary_threshold`); the log
    says why.
    """
    if objective == "none" or not (decision.multi_label or decision.positive_label is not None):
        return decision, None
    untuned = decision.untuned().predict(probs)  # the most probable label, or each label at probability 0.5
    labels = list(decision.labels)
    if decision.multi_label:
        return _tune_per_label(decision, objective, y_true, probs, untuned, labels)
    positive = decision.positive_label
    scores = probs[:, labels.index(positive)]  # (n_validation,)
    threshold, value, kept_half = tune_binary_threshold([label == positive for label in y_true], scores, objective)
    at_half = compute_metrics(y_true, untuned, labels, positive)
    if kept_half:
        logger.info(
            "decision threshold kept at 0.5 on P(%s) (the most probable label): %s; at 0.5: F1 %.4f, precision %.4f, "
            "recall %.4f",
            positive,
            kept_half,
            at_half["f1"],
            at_half["precision"],
            at_half["recall"],
        )
    else:
        logger.info(
            "decision threshold %.4f on P(%s), tuned on validation for %s (%.4f); at 0.5: F1 %.4f, precision %.4f, "
            "recall %.4f (set --threshold-metric none to keep 0.5)",
            threshold,
            positive,
            objective,
            value,
            at_half["f1"],
            at_half["precision"],
            at_half["recall"],
        )
    tuning = ThresholdTuning(objective, {k: at_half[k] for k in _BINARY_AT_HALF}, value=value)
    return replace(decision, threshold=threshold), tuning


def _tune_per_label(decision, objective, y_true, probs, untuned, labels) -> tuple[DecisionRule, ThresholdTuning]:
    # One threshold per label, best for the objective on that label's validation probabilities.
    truth = multi_hot(y_true, labels)  # (n_validation, n_labels)
    thresholds, values = tune_thresholds(truth, probs, labels, objective)
    at_half = multi_label_metrics(truth, multi_hot(untuned, labels), labels)
    untouched = [label for label in labels if label not in values]
    logger.info(
        "decision thresholds per label tuned on validation for %s: %.3f to %.3f%s; at 0.5: micro-F1 %.4f, macro-F1 "
        "%.4f (set --threshold-metric none to keep 0.5)",
        objective,
        min(thresholds.values()),
        max(thresholds.values()),
        f"; {len(untouched)} label(s) with fewer than {MIN_POSITIVES_TO_TUNE} positive validation texts keep 0.5: "
        f"{untouched}"
        if untouched
        else "",
        at_half["micro_f1"],
        at_half["macro_f1"],
    )
    tuning = ThresholdTuning(objective, {k: at_half[k] for k in _MULTI_LABEL_AT_HALF}, values=values)
    return replace(decision, thresholds=thresholds), tuning


def _baselines(config, train, validation, positive: str | None, max_length: int, embeddings, head, fusion):
    # The cheap models of bertfit.baseline on the same split, for the report: {name: {"metrics", "seconds"}}, the
    # metrics without their per-class tables. A failure costs the comparison, never the trained model.
    from .baseline import run_baselines

    try:
        results = run_baselines(
            train,
            validation,
            model_name_or_path=config.model_name_or_path,
            positive_label=positive,
            max_length=max_length,
            batch_size=config.eval_batch_size,
            embeddings=embeddings,
            tfidf=None if head is None else (head, fusion.seconds),
        )
    except (BertfitError, ValueError, MemoryError) as err:
        logger.warning("the baselines could not be trained (%s); the model is saved without them", err)
        return {}
    return {
        name: {
            "metrics": {k: v for k, v in result["metrics"].items() if isinstance(v, (float, str))},
            "seconds": round(result["seconds"], 1),
        }
        for name, result in results.items()
    }
