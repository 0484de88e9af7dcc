"""Classification metrics, computed with scikit-learn, offline. Pure functions over label names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .data import TextDataset
from .exceptions import DataError

if TYPE_CHECKING:
    from .model import TextClassifier

__all__ = ["compute_metrics", "evaluate", "collapse_warning", "minority_label"]


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
