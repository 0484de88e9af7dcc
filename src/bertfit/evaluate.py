"""Evaluate a trained model on labelled data: the metrics of :mod:`bertfit.metrics`, and the report rebuilt from a
model directory's saved validation predictions or on another labelled file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .card import REPORT_FILE, read_model_files
from .data import TextDataset, load_data
from .exceptions import DataError, ModelError
from .files import atomic_file
from .metrics import compute_metrics
from .model import load_classifier
from .predictor import Predictor
from .report import build_report

__all__ = ["evaluate", "check_labels", "write_report"]


def evaluate(classifier: Predictor, dataset: TextDataset, positive_label: str | None = None) -> dict[str, Any]:
    """Predict ``dataset`` with ``classifier`` and compute :func:`~bertfit.metrics.compute_metrics` against its
    labels.

    A multi-label model takes single-label data as label sets of one label each.

    Args:
        classifier: A fitted or loaded classifier (PyTorch or ONNX).
        dataset: Labelled texts; every label must be known to the classifier.
        positive_label: Overrides the classifier's positive label of a binary task.

    Raises:
        DataError: The data has labels the model does not know, or several labels per text for a single-label
            model.
        NotFittedError: The classifier is not fitted.

    >>> metrics = evaluate(TextClassifier.from_pretrained("runs/sms_spam"), load_data("val.csv"))  # doctest: +SKIP
    """
    dataset = check_labels(classifier, dataset)
    predictions = classifier.predict(dataset.texts)
    return compute_metrics(dataset.labels, predictions, classifier.labels, positive_label or classifier.positive_label)


def check_labels(classifier: Predictor, dataset: TextDataset) -> TextDataset:
    """``dataset`` with the classifier's kind of labels (label sets for a multi-label model), checked.

    Raises:
        DataError: The data has labels the model does not know, or several labels per text for a single-label
            model.
    """
    labels = classifier.labels
    if classifier.multi_label:
        dataset = dataset.as_multi_label()
    elif dataset.multi_label:
        raise DataError(
            f"{dataset.source} has several labels per text but this model predicts one; evaluate a model trained "
            "with --label-sep, or read the data without --label-sep"
        )
    unknown = sorted(set(dataset.classes) - set(labels))
    if unknown:
        raise DataError(
            f"labels {unknown} of {dataset.source} are not labels of this model {labels}; evaluate on data labelled "
            "with the model's classes (check --label-column, and --label-sep for multi-label data)"
        )
    return dataset


def write_report(
    model_dir: str | Path,
    data: str | Path | None = None,
    output: str | Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    sep: str | None = None,
    encoding: str = "utf-8",
    label_sep: str | None = None,
) -> Path:
    """Rebuild the report of a model directory, from its saved validation predictions or on ``data``.

    Args:
        model_dir: A directory written by ``bertfit train``.
        data: A labelled file to evaluate the model on instead of the saved validation predictions.
        output: Where to write the HTML; default: ``model_dir/report.html``.
        text_column: Column of ``data`` holding the texts.
        label_column: Column of ``data`` holding the labels.
        sep: Field separator of ``data``.
        encoding: Text encoding of ``data``.
        label_sep: Separator between the labels of a multi-label cell of ``data``, e.g. ``";"``.

    Returns:
        The path written.

    Raises:
        ModelError: ``model_dir`` is not a bertfit model directory.
        DataError: ``data`` cannot be read or has labels the model does not know; or, without ``data``, the
            directory has no saved validation predictions.

    >>> write_report("runs/spam", data="more_labelled.csv", output="spam_on_new_data.html")  # doctest: +SKIP
    """
    model_dir = Path(model_dir)
    files = read_model_files(model_dir) if model_dir.is_dir() else None
    if files is None or files.card is None:
        raise ModelError(f"{model_dir} has no bertfit.json; pass the --output-dir of a 'bertfit train' run")
    card, metrics, records = files.card, files.metrics, files.records
    if data is None and records is None:
        raise DataError(
            f"{model_dir} has no saved validation predictions (it was trained before reports existed); pass --data "
            "with a labelled file to build the report on"
        )
    if data is not None:
        classifier = load_classifier(model_dir)
        dataset = load_data(data, text_column, label_column, sep=sep, encoding=encoding, label_sep=label_sep)
        dataset = check_labels(classifier, dataset)
        probs = classifier.predict_proba(dataset.texts)
        records = classifier.decision.records(dataset.texts, dataset.labels, probs)
        predicted = classifier.decision.predict(probs)
        metrics = compute_metrics(dataset.labels, predicted, classifier.labels, classifier.positive_label)
    output = Path(output) if output else model_dir / REPORT_FILE
    with atomic_file(output) as handle:
        handle.write(build_report(card, metrics, records, evaluated_on=None if data is None else str(data)))
    return output
