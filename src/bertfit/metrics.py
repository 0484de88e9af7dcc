"""Classification metrics, computed with scikit-learn, offline: pure functions over label names (single-label) or
label-name sets (multi-label), the decision-threshold search, the collapse guard and the metrics table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from .decision import multi_hot
from .exceptions import ConfigError, DataError

__all__ = [
    "compute_metrics",
    "multi_label_metrics",
    "format_metrics",
    "collapse_warning",
    "minority_label",
    "majority_label",
    "tune_threshold",
    "tune_thresholds",
    "tune_binary_threshold",
    "threshold_gain",
]

# Multi-label collapse: the most common predicted label set covers at least this share of the texts. Not 100% as for
# single-label models: a sigmoid head that learned "no label" still fires on the odd text.
COLLAPSE_SHARE = 0.95
# A multi-label threshold is tuned only for a label with at least this many positive validation texts; the others
# keep 0.5. The F1-best threshold of a handful of examples is noise: on GoEmotions (a model trained on 6,000 texts,
# thresholds tuned on 1,000 validation texts, scored on 1,000 others) tuning every label with a positive gave micro-F1
# 0.387 and Hamming loss 0.074, tuning those with 10 or more 0.480 and 0.050 (macro-F1 0.330 vs 0.301; micro-F1 with
# 0.5 for every label: 0.401).
MIN_POSITIVES_TO_TUNE = 10
# A binary threshold is tuned only when validation holds MIN_POSITIVES_TO_TUNE texts of each class, and kept only when
# its gain over 0.5 on these texts is above NOISE_STANDARD_ERRORS standard errors of that gain (a paired bootstrap of
# the texts, both thresholds fixed; about a one-sided 98% test). In simulations of weak and of calibrated models this
# kept 0.5 where tuning lost held-out F1 (30 validation texts of a calibrated model: F1 0.909 at 0.5, 0.894 tuned) and
# tuned where 0.5 was far off (a model biased against the positive class, 200 texts: 0.768 at 0.5, 0.902 kept).
NOISE_STANDARD_ERRORS = 2.0
BOOTSTRAP_RESAMPLES = 200


def compute_metrics(
    y_true: Sequence[str] | Sequence[Sequence[str]],
    y_pred: Sequence[str] | Sequence[Sequence[str]],
    labels: Sequence[str],
    positive_label: str | None = None,
) -> dict[str, Any]:
    """Accuracy, F1 averages, MCC, per-class scores and the confusion matrix of predicted label names.

    For multi-label data (each item of ``y_true`` and ``y_pred`` a collection of label names) the metrics are those
    of :func:`multi_label_metrics`.

    Args:
        y_true: True label names (multi-label: label-name sets).
        y_pred: Predicted label names (multi-label: label-name sets).
        labels: All label names of the model, in id order; fixes the order of the per-class scores and the matrix.
        positive_label: For a two-label model, the class whose precision, recall, F1 and specificity are reported.

    Returns:
        A JSON-ready dict with the keys ``accuracy``, ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``mcc``,
        ``per_class`` ({label: {precision, recall, f1, support}}), ``confusion_matrix`` ({labels, matrix}) and, for
        binary tasks, ``positive_label``, ``precision``, ``recall``, ``f1`` and ``specificity``.

    >>> compute_metrics(["a", "b", "b"], ["a", "b", "a"], ["a", "b"], positive_label="b")["recall"]
    0.5
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef
    from sklearn.metrics import precision_recall_fscore_support as prfs

    labels = list(labels)
    if len(y_true) == 0:
        raise DataError("cannot compute metrics on an empty dataset; give at least one labelled text")
    if not isinstance(y_true[0], str):
        return multi_label_metrics(multi_hot(y_true, labels), multi_hot(y_pred, labels), labels)
    precision, recall, f1, support = prfs(y_true, y_pred, labels=labels, zero_division=0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class": _per_class(labels, precision, recall, f1, support),
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }
    if len(labels) == 2 and positive_label is not None:
        metrics.update(_binary_metrics(metrics, positive_label))
    return metrics


def multi_label_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """The metrics of a multi-label task from 0/1 matrices of shape ``(n_texts, n_labels)``.

    Args:
        y_true: True label sets, multi-hot (see :func:`bertfit.decision.multi_hot`).
        y_pred: Predicted label sets, multi-hot.
        labels: The label names of the columns.

    Returns:
        A JSON-ready dict: ``accuracy`` and ``subset_accuracy`` (the same number: the share of texts whose predicted
        set is exactly right), ``hamming_loss`` (the share of wrong label decisions), ``micro_precision``,
        ``micro_recall``, ``micro_f1`` (over all label decisions), ``macro_f1`` (the mean of the labels' F1),
        ``weighted_f1`` (weighted by support), ``samples_f1`` (the mean over texts of the F1 of each text's set; 1
        for a correctly empty prediction) and ``per_class`` ({label: {precision, recall, f1, support}}).

    >>> m = multi_label_metrics(np.array([[1, 0], [1, 1]]), np.array([[1, 0], [1, 0]]), ["a", "b"])
    >>> m["subset_accuracy"], m["hamming_loss"], round(m["micro_f1"], 4)
    (0.5, 0.25, 0.8)
    """
    from sklearn.metrics import f1_score
    from sklearn.metrics import precision_recall_fscore_support as prfs

    y_true, y_pred = np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool)
    if len(y_true) == 0:
        raise DataError("cannot compute metrics on an empty dataset; give at least one labelled text")
    precision, recall, f1, support = prfs(y_true, y_pred, zero_division=0)
    micro_p, micro_r, micro_f1, _ = prfs(y_true, y_pred, average="micro", zero_division=0)
    overlap = (y_true & y_pred).sum(axis=1)
    sizes = y_true.sum(axis=1) + y_pred.sum(axis=1)
    subset_accuracy = float((y_true == y_pred).all(axis=1).mean())
    return {
        "accuracy": subset_accuracy,
        "subset_accuracy": subset_accuracy,
        "hamming_loss": float((y_true != y_pred).mean()),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "micro_f1": float(micro_f1),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "samples_f1": float(np.where(sizes > 0, 2 * overlap / np.maximum(sizes, 1), 1.0).mean()),
        "per_class": _per_class(list(labels), precision, recall, f1, support),
    }


def _per_class(labels: list[str], precision, recall, f1, support) -> dict[str, dict[str, float | int]]:
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }


def _binary_metrics(metrics: dict[str, Any], positive_label: str) -> dict[str, Any]:
    labels = metrics["confusion_matrix"]["labels"]
    if positive_label not in labels:
        raise DataError(
            f"positive label {positive_label!r} is not one of the model's labels {labels}; "
            "pass --positive-label with one of them"
        )
    pos = labels.index(positive_label)
    matrix = np.asarray(metrics["confusion_matrix"]["matrix"])  # rows: true label, columns: predicted label
    tn = matrix[1 - pos, 1 - pos]
    fp = matrix[1 - pos, pos]
    scores = metrics["per_class"][positive_label]
    return {
        "positive_label": positive_label,
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "specificity": float(tn / (tn + fp)) if tn + fp else 0.0,
    }


def minority_label(labels: Sequence[str]) -> str:
    """The least frequent label (ties go to the one sorted last, e.g. 'spam' over 'ham' or '1' over '0')."""
    counts = Counter(labels)
    return min(sorted(counts, reverse=True), key=lambda label: counts[label])


def majority_label(labels: Sequence[str] | Sequence[Sequence[str]]) -> str | tuple[str, ...]:
    """The most frequent label (ties: the first in sorted order), or for label sets the most frequent set (ties: the
    first seen): what the majority-class baseline predicts for every text.

    >>> majority_label(["spam", "ham", "ham"]), majority_label([("a",), (), ("a",)])
    ('ham', ('a',))
    """
    if len(labels) and not isinstance(labels[0], str):
        return Counter(tuple(row) for row in labels).most_common(1)[0][0]
    counts = Counter(labels)
    return max(sorted(counts), key=lambda label: counts[label])


def collapse_warning(
    y_true: Sequence[str] | Sequence[Sequence[str]],
    y_pred: Sequence,
    majority: str | Sequence[str] | None = None,
) -> str | None:
    """A warning text when the model collapsed or is no better than the majority-class baseline, else None.

    Single-label: the predictions hold a single class while the truth holds several. Multi-label (items are label
    sets): one predicted set, often the empty one, covers at least :data:`COLLAPSE_SHARE` of the texts while the truth
    holds several sets. With ``majority`` (the training data's :func:`majority_label`): also when the model's
    macro-F1 (micro-F1 for label sets) on ``y_true`` is not above that of predicting ``majority`` for every text.
    """
    multi_label = len(y_pred) > 0 and not isinstance(y_pred[0], str)
    collapsed = _multi_label_collapse(y_true, y_pred) if multi_label else _single_label_collapse(y_true, y_pred)
    if collapsed or majority is None or len(y_true) == 0:
        return collapsed
    if multi_label:
        labels = sorted({label for row in (*y_true, *y_pred, majority) for label in row})
        truth = multi_hot(y_true, labels)
        key, model = "micro-F1", multi_label_metrics(truth, multi_hot(y_pred, labels), labels)["micro_f1"]
        constant = multi_label_metrics(truth, multi_hot([tuple(majority)] * len(y_true), labels), labels)["micro_f1"]
    else:
        from sklearn.metrics import f1_score

        labels = sorted({*y_true, *y_pred, majority})
        key, model = "macro-F1", f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        constant = f1_score(y_true, [majority] * len(y_true), labels=labels, average="macro", zero_division=0)
    if model > constant:
        return None
    named = f"the label set {list(majority)}" if multi_label else repr(majority)
    return (
        f"NO BETTER THAN THE MAJORITY CLASS: the model's validation {key} ({model:.4f}) is not above that of "
        f"predicting {named} for every text ({constant:.4f}). {_COLLAPSE_ADVICE}"
    )


def _single_label_collapse(y_true: Sequence[str], y_pred: Sequence[str]) -> str | None:
    predicted = set(y_pred)
    if len(predicted) != 1 or len(set(y_true)) < 2:
        return None
    (only,) = predicted
    share = sum(label == only for label in y_true) / len(y_true)
    return (
        f"MODEL COLLAPSE: the model predicts {only!r} for every validation text. Its accuracy ({share:.1%}) is just "
        f"the share of {only!r} in the data, and every other class has F1 = 0. {_COLLAPSE_ADVICE}"
    )


_COLLAPSE_ADVICE = (
    "Try: a lower learning rate (--lr 3e-5), more epochs (--epochs), more examples of the rare classes, and check "
    "that texts and labels are paired correctly."
)


def _multi_label_collapse(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> str | None:
    truth = [tuple(row) for row in y_true]
    if len(set(truth)) < 2:
        return None
    top, count = Counter(tuple(row) for row in y_pred).most_common(1)[0]
    if count < COLLAPSE_SHARE * len(y_pred):
        return None
    named = f"the labels {list(top)}" if top else "no label at all"
    return (
        f"MODEL COLLAPSE: the model predicts {named} for {count / len(y_pred):.1%} of the validation texts (at "
        f"probability 0.5 per label), while only {truth.count(top) / len(truth):.1%} of them carry that label set: it "
        f"has learned the label frequencies, not the texts. {_COLLAPSE_ADVICE}"
    )


def tune_threshold(is_positive: Sequence[bool], scores: Sequence[float], objective: str = "f1") -> tuple[float, float]:
    """The decision threshold on the positive-class probability that is best for ``objective`` on these texts.

    A text is predicted positive when its score is >= the threshold; the threshold returned lies halfway between
    the lowest score called positive and the next lower one, so it generalizes a little better than a score itself.

    Args:
        is_positive: Whether each text's true label is the positive class.
        scores: Each text's probability of the positive class.
        objective: ``"f1"`` (F1 of the positive class), ``"precision>=P"`` (the highest recall whose precision is
            at least P) or ``"recall>=R"`` (the highest precision whose recall is at least R).

    Returns:
        ``(threshold, value)``: value is the F1, recall or precision reached (0.0 when no threshold qualifies).

    >>> tune_threshold([False, False, True, True], [0.1, 0.6, 0.4, 0.9])
    (0.25, 0.8)
    """
    truth = np.asarray(is_positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked, truth = np.asarray(scores, dtype=np.float64)[order], truth[order]
    # Calling the top k texts positive, for every k at the end of a run of tied scores.
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    k = ends + 1
    tp = np.cumsum(truth)[ends]
    n_pos = int(truth.sum())
    if n_pos == 0:
        return 0.5, 0.0
    precision, recall = tp / k, tp / n_pos
    kind, _, target = objective.partition(">=")
    if kind == "f1" and not target:
        value = 2 * tp / (k + n_pos)
    elif kind in ("precision", "recall") and target:
        floor = float(target)
        ok = (precision if kind == "precision" else recall) >= floor
        value = np.where(ok, recall if kind == "precision" else precision, -1.0)
    else:
        raise ConfigError(f"threshold objective must be 'f1', 'precision>=P' or 'recall>=R', got {objective!r}")
    best = int(np.argmax(value))  # the first (highest-threshold) of equal values
    if value[best] < 0:
        return 0.5, 0.0
    lower = ranked[ends[best] + 1] if ends[best] + 1 < len(ranked) else 0.0
    return float((ranked[ends[best]] + lower) / 2), float(value[best])


def tune_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    objective: str = "f1",
    *,
    min_positives: int = MIN_POSITIVES_TO_TUNE,
) -> tuple[dict[str, float], dict[str, float]]:
    """One decision threshold per label of a multi-label model: :func:`tune_threshold` on each label's column.

    A label with fewer than ``min_positives`` positive texts in ``y_true`` keeps 0.5 (none: nothing to tune on; a
    few: a threshold fitted to them is noise), as does a label whose ``objective`` cannot be met.

    Args:
        y_true: True label sets, multi-hot, shape ``(n_texts, n_labels)``.
        probs: Each label's probability, same shape.
        labels: The label names of the columns.
        objective: As for :func:`tune_threshold`, applied to each label.
        min_positives: The fewest positive texts a label's threshold is tuned on.

    Returns:
        ``(thresholds, values)``: label -> threshold (every label), and label -> the objective's value reached on
        these texts (the tuned labels only).

    >>> truth, probs = np.array([[1, 0], [0, 0], [1, 0]]), np.array([[0.3, 0.1], [0.2, 0.9], [0.9, 0.2]])
    >>> tune_thresholds(truth, probs, ["a", "b"], min_positives=1)
    ({'a': 0.25, 'b': 0.5}, {'a': 1.0})
    """
    y_true = np.asarray(y_true, dtype=bool)
    thresholds, values = dict.fromkeys(labels, 0.5), {}
    for k, label in enumerate(labels):
        if y_true[:, k].sum() >= max(min_positives, 1):
            thresholds[label], values[label] = tune_threshold(y_true[:, k], probs[:, k], objective)
    return thresholds, values


def tune_binary_threshold(
    is_positive: Sequence[bool],
    scores: Sequence[float],
    objective: str = "f1",
    *,
    min_per_class: int = MIN_POSITIVES_TO_TUNE,
) -> tuple[float, float, str | None]:
    """A binary decision threshold tuned by :func:`tune_threshold`, or 0.5 when these texts cannot support one.

    0.5 (the most probable class) is kept when there are fewer than ``min_per_class`` positive or negative texts, when
    no threshold meets ``objective``, or when the tuned threshold's gain over 0.5 (see :func:`threshold_gain`) is not
    above :data:`NOISE_STANDARD_ERRORS` standard errors. For ``precision>=P`` / ``recall>=R``, a threshold that meets
    the floor where 0.5 does not is kept without the noise test: the floor is what was asked for.

    Returns:
        ``(threshold, value, reason)``: value is the objective reached at the threshold returned (as in
        :func:`tune_threshold`); reason says why 0.5 was kept, None when the tuned threshold is.

    >>> tune_binary_threshold([False, False, True, True], [0.1, 0.6, 0.4, 0.9])[2]
    'validation holds 2 positive and 2 negative texts; a threshold is tuned on at least 10 of each'
    """
    truth = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if min(n_pos, n_neg) < min_per_class:
        reason = (
            f"validation holds {n_pos} positive and {n_neg} negative texts; a threshold is tuned on at least "
            f"{min_per_class} of each"
        )
        return 0.5, _objective_at(truth, scores, 0.5, objective), reason
    threshold, value = tune_threshold(truth, scores, objective)
    kind, _, floor = objective.partition(">=")
    if floor and value <= 0.0:  # tune_threshold found none
        reason = f"no threshold reaches {objective} on the {len(truth)} validation texts"
    elif floor and not _meets_floor(truth, scores >= 0.5, kind, float(floor)):
        return threshold, value, None  # 0.5 misses the floor asked for
    else:
        gain, error = threshold_gain(truth, scores, threshold, objective)
        if gain > NOISE_STANDARD_ERRORS * error:
            return threshold, value, None
        metric = {"f1": "F1", "precision": "recall", "recall": "precision"}[kind]
        reason = (
            f"the tuned threshold {threshold:.4f} gains {gain:+.4f} {metric} over 0.5, not above the noise of "
            f"{len(truth)} validation texts ({NOISE_STANDARD_ERRORS:g} standard errors: "
            f"{NOISE_STANDARD_ERRORS * error:.4f})"
        )
    return 0.5, _objective_at(truth, scores, 0.5, objective), reason


def threshold_gain(
    is_positive: Sequence[bool],
    scores: Sequence[float],
    threshold: float,
    objective: str = "f1",
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """How much ``threshold`` beats 0.5 on these texts, and the standard error of that gain.

    The gain is in F1 (objective ``f1``), recall (``precision>=P``) or precision (``recall>=R``); its standard error
    is the standard deviation of the gain over ``resamples`` bootstrap resamples of the texts, both thresholds held
    fixed (paired: a resample draws texts, with both decisions of each).

    Returns:
        ``(gain, standard_error)``.

    >>> gain, error = threshold_gain([False] * 20 + [True] * 20, [0.3] * 20 + [0.4] * 20, 0.35)
    >>> round(gain, 4), error < 0.01
    (1.0, True)
    """
    truth = np.asarray(is_positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    # Eight cells: true class x decision at threshold x decision at 0.5. A bootstrap resample of the texts is a
    # multinomial draw of the cell counts, so the cost does not grow with the number of texts.
    cells = 4 * truth + 2 * (scores >= threshold) + (scores >= 0.5)
    counts = np.bincount(cells, minlength=8)
    draws = np.random.default_rng(seed).multinomial(len(truth), counts / max(len(truth), 1), size=resamples)
    table = np.vstack([counts, draws])  # (1 + resamples, 8): these texts, then the resamples
    kind = objective.partition(">=")[0]
    gain = _cell_metric(table, 2, kind) - _cell_metric(table, 1, kind)  # (1 + resamples,)
    return float(gain[0]), float(gain[1:].std())


def _cell_metric(table: np.ndarray, decision_bit: int, kind: str) -> np.ndarray:
    # The metric an objective maximizes, per row of cell counts (rows, 8), for the decision in decision_bit.
    index = np.arange(8)
    positive, called = index >= 4, (index & decision_bit) > 0
    tp = table[:, positive & called].sum(axis=1)
    return _maximized(tp, table[:, called].sum(axis=1), table[:, positive].sum(axis=1), kind)


def _maximized(tp, n_called, n_pos, kind: str):
    # What an objective maximizes: F1 ("f1"), recall ("precision>=P"), precision ("recall>=R"); arrays or numbers.
    if kind == "f1":
        return 2 * tp / np.maximum(n_called + n_pos, 1)
    return tp / np.maximum(n_pos if kind == "precision" else n_called, 1)


def _meets_floor(truth: np.ndarray, called: np.ndarray, kind: str, floor: float) -> bool:
    # The floor's metric is what the other constraint maximizes: precision for "precision>=P", recall for "recall>=R".
    tp, n_called, n_pos = int((truth & called).sum()), int(called.sum()), int(truth.sum())
    return float(_maximized(tp, n_called, n_pos, "recall" if kind == "precision" else "precision")) >= floor


def _objective_at(truth: np.ndarray, scores: np.ndarray, threshold: float, objective: str) -> float:
    # The value tune_threshold reports, at a given threshold (0.0 when a floor is not met).
    kind, _, floor = objective.partition(">=")
    if not (kind == "f1" and not floor) and not (kind in ("precision", "recall") and floor):
        raise ConfigError(f"threshold objective must be 'f1', 'precision>=P' or 'recall>=R', got {objective!r}")
    called = scores >= threshold
    if floor and not _meets_floor(truth, called, kind, float(floor)):
        return 0.0
    return float(_maximized(int((truth & called).sum()), int(called.sum()), int(truth.sum()), kind))


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as text: the scalar scores, the positive class's scores, the per-class table and (single-label)
    the confusion matrix."""
    scalars = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "samples_f1", "hamming_loss")
    lines = [f"  {name:<12}{metrics[name]:.4f}" for name in scalars if name in metrics]
    if "hamming_loss" in metrics:
        lines[0] += "  (subset accuracy: the share of texts whose predicted label set is exactly right)"
    if "positive_label" in metrics:
        lines.append(
            f"  positive class {metrics['positive_label']!r}: "
            + "  ".join(f"{name} {metrics[name]:.4f}" for name in ("precision", "recall", "f1", "specificity"))
        )
    lines.append(f"  {'class':<20}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for label, s in metrics["per_class"].items():
        lines.append(f"  {label:<20}{s['precision']:>10.4f}{s['recall']:>10.4f}{s['f1']:>10.4f}{s['support']:>10}")
    if "confusion_matrix" not in metrics:  # multi-label
        return "\n".join(lines)
    cm = metrics["confusion_matrix"]
    width = max(8, *(len(label) + 2 for label in cm["labels"]))
    lines.append("  confusion matrix (rows: true, columns: predicted)")
    lines.append("  " + " " * width + "".join(f"{label:>{width}}" for label in cm["labels"]))
    for label, row in zip(cm["labels"], cm["matrix"]):
        lines.append(f"  {label:<{width}}" + "".join(f"{n:>{width}}" for n in row))
    return "\n".join(lines)
