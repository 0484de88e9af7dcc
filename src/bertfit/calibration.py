"""Temperature scaling: one temperature ``T`` fitted on validation so that a model's probabilities mean what they say,
and the expected calibration error (ECE) and reliability bins that show how well they do.

A fine-tuned encoder is usually overconfident: of the texts it scores 0.99, far fewer than 99% are right. Dividing
every logit by one ``T > 0`` (Guo et al. 2017, "On Calibration of Modern Neural Networks") fixes most of that
without changing which label is the most probable: a single-label model's argmax, and a multi-label model's side of
logit 0 (probability 0.5), stay as they are. ``T`` minimizes the validation negative log-likelihood: the softmax
cross-entropy of a single-label model, or the mean binary cross-entropy of a multi-label model's sigmoids (one ``T``
for all labels). Decision thresholds are then tuned on the calibrated probabilities (:mod:`bertfit.validate`), and
:meth:`bertfit.decision.DecisionRule.probabilities` applies ``T`` wherever a model predicts.

``T`` stays 1 (and the log says why) when validation holds fewer than :data:`MIN_TEXTS_TO_CALIBRATE` texts, when the
model gets all of them right (the NLL then falls with ``T`` towards 0: no temperature to fit), when the NLL falls to
the edge of the search range (0.05 to 20), or when the fitted ``T`` does not lower the validation NLL.

ECE: the confidences fall into :data:`ECE_BINS` equal-width bins on [0, 1]; ECE is the text-weighted mean of
``|accuracy - mean confidence|`` over the bins. The confidence of a single-label model is its top label's
probability (accuracy: that label is the true one); a multi-label model counts every label's probability of every
text (accuracy: the share of those that are true labels).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .decision import DecisionRule, multi_hot

__all__ = [
    "Calibration",
    "Reliability",
    "calibrate",
    "fit_temperature",
    "reliability",
    "negative_log_likelihood",
    "targets_of",
    "MIN_TEXTS_TO_CALIBRATE",
    "ECE_BINS",
]

logger = logging.getLogger(__name__)

# Below this many validation texts a temperature fits the noise of the few texts more than the model's confidence;
# the same spirit as metrics.MIN_POSITIVES_TO_TUNE for thresholds.
MIN_TEXTS_TO_CALIBRATE = 50
ECE_BINS = 15
# log T is searched in [log 0.05, log 20]: beyond that the logits are all but constant or all but one-hot.
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
_DIGITS = 6


@dataclass
class Reliability:
    """Reliability bins of one set of probabilities: per equal-width bin on [0, 1], the number of confidences in
    it, their mean and the accuracy there (None for an empty bin); and the ECE over them."""

    counts: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]
    ece: float

    def to_info(self) -> dict[str, Any]:
        return {"ece": self.ece, "counts": self.counts, "confidence": self.confidence, "accuracy": self.accuracy}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Reliability:
        return cls(list(info["counts"]), list(info["confidence"]), list(info["accuracy"]), info["ece"])


@dataclass
class Calibration:
    """The temperature of a model and what it did on validation.

    Args:
        temperature: The ``T`` every logit is divided by (1: uncalibrated).
        texts: Validation texts it was fitted (or measured) on.
        nll_before: Validation NLL at ``T = 1``.
        nll_after: Validation NLL at ``temperature``.
        before: Reliability bins and ECE at ``T = 1``.
        after: Reliability bins and ECE at ``temperature``.
        kept: Why ``T`` stayed 1, or None when it was fitted.
    """

    temperature: float
    texts: int
    nll_before: float
    nll_after: float
    before: Reliability
    after: Reliability
    kept: str | None = None

    def to_info(self) -> dict[str, Any]:
        """The ``calibration`` entry of ``bertfit.json``."""
        info: dict[str, Any] = {"temperature": self.temperature, "texts": self.texts}
        info.update(nll_before=self.nll_before, nll_after=self.nll_after, kept=self.kept)
        return {**info, "before": self.before.to_info(), "after": self.after.to_info()}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Calibration:
        return cls(
            temperature=float(info["temperature"]),
            texts=info["texts"],
            nll_before=info["nll_before"],
            nll_after=info["nll_after"],
            before=Reliability.from_info(info["before"]),
            after=Reliability.from_info(info["after"]),
            kept=info.get("kept"),
        )


def targets_of(y_true: Sequence[str] | Sequence[Sequence[str]], decision: DecisionRule) -> np.ndarray:
    """The true labels as label ids ``(n_texts,)``, or for a multi-label model a 0/1 matrix ``(n_texts, n_labels)``."""
    labels = list(decision.labels)
    if decision.multi_label:
        return multi_hot(y_true, labels)
    index = {label: k for k, label in enumerate(labels)}
    return np.array([index[label] for label in y_true], dtype=np.int64)


def negative_log_likelihood(
    logits: np.ndarray, targets: np.ndarray, multi_label: bool, temperature: float = 1.0
) -> float:
    """Mean NLL of ``logits / temperature`` (shape ``(n_texts, n_labels)``): softmax cross-entropy against label ids,
    or (multi-label) binary cross-entropy against a 0/1 matrix, averaged over every label of every text."""
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64) / temperature
    if multi_label:
        # BCE with logits, without overflow: log(1 + e^z) - y z
        return float(np.mean(np.logaddexp(0.0, z) - targets * z))
    log_p = log_softmax(z, axis=1)
    return float(-np.mean(log_p[np.arange(len(z)), targets]))


def fit_temperature(
    logits: np.ndarray, targets: np.ndarray, multi_label: bool, *, min_texts: int = MIN_TEXTS_TO_CALIBRATE
) -> tuple[float, str | None]:
    """The temperature that minimizes the NLL of ``logits`` (see :func:`negative_log_likelihood`), rounded to 4
    digits, or 1.0 when these texts cannot support one.

    Returns:
        ``(temperature, kept)``: kept says why 1.0 was kept, None when the fitted temperature is returned.

    >>> rng = np.random.default_rng(0)
    >>> calibrated = rng.normal(size=(2000, 3))
    >>> targets = np.array([rng.choice(3, p=np.exp(z) / np.exp(z).sum()) for z in calibrated])
    >>> round(fit_temperature(3 * calibrated, targets, multi_label=False)[0])
    3
    """
    from scipy.optimize import minimize_scalar

    n = len(logits)
    if n < min_texts:
        return 1.0, f"validation holds {n} texts; a temperature is fitted on at least {min_texts}"
    logits = np.asarray(logits, dtype=np.float64)
    right = (logits > 0) == targets.astype(bool) if multi_label else logits.argmax(axis=1) == targets
    if right.all():  # the NLL falls with T all the way to 0: these texts cannot say how sure to be of others
        what = "every label of every validation text is" if multi_label else "all validation texts are"
        return 1.0, f"{what} predicted right; a temperature needs some mistakes to fit to"
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, targets, multi_label, math.exp(log_t)),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    temperature = round(math.exp(found.x), 4)
    lowest, highest = math.exp(_LOG_T_BOUNDS[0]), math.exp(_LOG_T_BOUNDS[1])
    if not lowest * 1.01 < temperature < highest / 1.01:
        # The NLL falls all the way to a bound (e.g. logits with no signal left): no temperature is supported.
        return (
            1.0,
            f"the validation NLL keeps falling to the search bound T = {temperature:.3g}; no temperature is supported",
        )
    before = negative_log_likelihood(logits, targets, multi_label)
    after = negative_log_likelihood(logits, targets, multi_label, temperature)
    if not after < before:  # also false for NaN logits
        return 1.0, (
            f"the fitted temperature {temperature:g} does not lower the validation NLL ({after:.4f} against "
            f"{before:.4f} at 1)"
        )
    return temperature, None


def reliability(probs: np.ndarray, targets: np.ndarray, multi_label: bool, bins: int = ECE_BINS) -> Reliability:
    """Reliability bins and ECE of ``probs`` ``(n_texts, n_labels)`` against the targets of :func:`targets_of`.

    >>> reliability(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]), multi_label=False).ece  # 90% sure, 50% right
    0.4
    """
    probs = np.asarray(probs, dtype=np.float64)
    if multi_label:  # every label's probability of every text
        confidence, correct = probs.ravel(), np.asarray(targets, dtype=np.float64).ravel()
    else:
        confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
        correct = (probs.argmax(axis=1) == targets).astype(np.float64) if len(probs) else np.zeros(0)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)  # [0, 1/bins), ..., [1 - 1/bins, 1]
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    filled = counts > 0
    ece = float(np.sum(counts[filled] * np.abs(accuracy[filled] - mean_conf[filled])) / max(len(confidence), 1))

    def column(values: np.ndarray) -> list[float | None]:
        return [round(float(v), _DIGITS) if ok else None for v, ok in zip(values, filled)]

    return Reliability(counts.tolist(), column(mean_conf), column(accuracy), round(ece, _DIGITS))


def calibrate(
    logits: np.ndarray,
    y_true: Sequence[str] | Sequence[Sequence[str]],
    decision: DecisionRule,
    *,
    enabled: bool = True,
    min_texts: int = MIN_TEXTS_TO_CALIBRATE,
) -> Calibration:
    """Fit the temperature of a model on its validation logits and measure it (see the module docstring).

    Args:
        logits: Validation logits, one row per text ``(n_texts, n_labels)`` (chunked texts: their aggregated window
            logits).
        y_true: The validation texts' labels (label sets for a multi-label model).
        decision: The model's decision rule (labels and task kind).
        enabled: False: keep ``T = 1`` (``--no-calibrate``) and only measure.
        min_texts: The fewest texts a temperature is fitted on.

    Returns:
        The temperature with the NLL and reliability bins before and after it.
    """
    targets = targets_of(y_true, decision)
    multi_label = decision.multi_label
    if enabled:
        temperature, kept = fit_temperature(logits, targets, multi_label, min_texts=min_texts)
    else:
        temperature, kept = 1.0, "calibration is turned off (--no-calibrate)"
    uncalibrated = replace(decision, temperature=1.0)
    before = reliability(uncalibrated.probabilities(logits), targets, multi_label)
    after = reliability(replace(decision, temperature=temperature).probabilities(logits), targets, multi_label)
    calibration = Calibration(
        temperature,
        len(logits),
        round(negative_log_likelihood(logits, targets, multi_label), _DIGITS),
        round(negative_log_likelihood(logits, targets, multi_label, temperature), _DIGITS),
        before,
        after,
        kept,
    )
    if kept:
        logger.info("temperature kept at 1: %s; validation ECE %.4f", kept, before.ece)
    else:
        logger.info(
            "temperature %.4f fitted on %d validation texts: NLL %.4f -> %.4f, ECE %.4f -> %.4f (--no-calibrate "
            "keeps 1)",
            temperature,
            len(logits),
            calibration.nll_before,
            calibration.nll_after,
            before.ece,
            after.ece,
        )
    return calibration
