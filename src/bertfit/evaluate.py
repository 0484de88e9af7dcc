"""Classification metrics, computed with scikit-learn, offline. Pure functions over label names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import TextDataset
from .exceptions import ConfigError, DataError

if TYPE_CHECKING:
    from .model import TextClassifier

__all__ = ["compute_metrics", "evaluate", "collapse_warning", "minority_label", "tune_threshold"]


def compute_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str], positive_label: str | None = None
) -> dict[str, Any]:
    """Accuracy, F1 averages, MCC, per-class scores and the confusion matrix of predicted label names.

    Args:
        y_true: True label names.
        y_pred: Predicted label names.
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
    precision, recall, f1, support = prfs(y_true, y_pred, labels=labels, zero_division=0)
    metrics: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "per_class": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support)
        },
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist()},
    }
    if len(labels) == 2 and positive_label is not None:
        metrics.update(_binary_metrics(metrics, positive_label))
    return metrics


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


def collapse_warning(y_true: Sequence[str], y_pred: Sequence[str]) -> str | None:
    """A warning text when the predictions hold a single class while the truth holds several, else None."""
    predicted = set(y_pred)
    if len(predicted) != 1 or len(set(y_true)) < 2:
        return None
    (only,) = predicted
    share = sum(label == only for label in y_true) / len(y_true)
    return (
        f"MODEL COLLAPSE: the model predicts {only!r} for every validation text. Its accuracy ({share:.1%}) is just "
        f"the share of {only!r} in the data, and every other class has F1 = 0. Try: a lower learning rate "
        "(--lr 3e-5), more epochs (--epochs), more examples of the rare classes, and check that texts and labels "
        "are paired correctly."
    )


def evaluate(classifier: TextClassifier, dataset: TextDataset, positive_label: str | None = None) -> dict[str, Any]:
    """Predict ``dataset`` with ``classifier`` and compute :func:`compute_metrics` against its labels.

    Args:
        classifier: A fitted or loaded classifier.
        dataset: Labelled texts; every label must be known to the classifier.
        positive_label: Overrides the classifier's positive label of a binary task.

    Raises:
        DataError: The data has labels the model does not know.
        NotFittedError: The classifier is not fitted.

    >>> metrics = evaluate(TextClassifier.from_pretrained("runs/sms_spam"), load_data("val.csv"))  # doctest: +SKIP
    """
    labels = classifier.labels
    unknown = sorted(set(dataset.labels) - set(labels))
    if unknown:
        raise DataError(
            f"labels {unknown} of {dataset.source} are not labels of this model {labels}; "
            "evaluate on data labelled with the model's classes (check --label-column)"
        )
    predictions = classifier.predict(dataset.texts)
    return compute_metrics(dataset.labels, predictions, labels, positive_label or classifier.positive_label)


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
