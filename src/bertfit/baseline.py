"""Baselines that show what fine-tuning gains: majority class, TF-IDF + logistic regression, and frozen encoder
embeddings (mean pooling) + logistic regression (the feature-based approach), scored with the same metrics.

Every baseline trains on the same training rows and is scored on the same validation rows as ``bertfit train``, with
:func:`bertfit.evaluate.compute_metrics`, so its numbers sit beside the fine-tuned model's. On multi-label data the
majority baseline predicts the most frequent label set, and the logistic regressions become one-vs-rest: one binary
classifier per label, each deciding at probability 0.5 (no per-label threshold tuning, unlike fine-tuning).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .backbone import load_sequence_classifier, load_tokenizer, model_max_length, resolve_model
from .cache import embeddings_cached, encoder_digest
from .data import TextDataset, check_validation
from .decision import DecisionRule, multi_hot
from .exceptions import ConfigError, DataError
from .hardware import resolve_precision
from .inference import torch_embeddings
from .metrics import compute_metrics, majority_label, minority_label

__all__ = ["BASELINES", "run_baselines", "format_baselines", "frozen_embeddings"]

logger = logging.getLogger(__name__)

# Names in the order they run and print: from the floor to the strongest baseline.
BASELINES = ("majority_class", "tfidf_logreg", "frozen_embeddings_logreg")


def run_baselines(
    train: TextDataset,
    validation: TextDataset,
    *,
    model_name_or_path: str | None = None,
    positive_label: str | None = None,
    max_length: int = 256,
    batch_size: int = 64,
    embeddings: tuple[np.ndarray, np.ndarray, float] | None = None,
    tfidf: tuple[Any, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train each baseline on ``train`` and score it on ``validation`` with the metrics of fine-tuning.

    - ``majority_class``: predicts the most frequent training label for every text; the floor any model must beat.
    - ``tfidf_logreg``: TF-IDF of word 1-2 grams (sublinear tf) + logistic regression.
    - ``frozen_embeddings_logreg``: the encoder's mean-pooled last hidden states (computed on a bf16 copy of the
      encoder where the hardware has bf16), never updated, standardized, + logistic regression.

    Both logistic regressions use ``class_weight="balanced"``, so a rare class is not ignored for accuracy's sake:
    the baselines compete on macro-F1 and the positive class's F1, the numbers fine-tuning is judged on. Multi-label
    data (label sets): the majority baseline predicts the most frequent label set, and each logistic regression is
    one-vs-rest, a balanced binary classifier per label deciding at probability 0.5.

    Args:
        train: Training texts and labels.
        validation: Texts and labels to score on; every label must occur in ``train``.
        model_name_or_path: Encoder of the frozen-embedding baseline (local directory or hub id); None takes the
            embedded default model, as training does.
        positive_label: Positive class of a binary task; default: the minority training label (as in training).
        max_length: Longest input in tokens for the encoder; longer texts are truncated.
        batch_size: Texts per encoder forward pass.
        embeddings: The frozen encoder's embeddings of ``train`` and ``validation`` and the seconds they took, when
            they were computed already (``bertfit train`` computes them with the model it loaded, before training);
            see :func:`frozen_embeddings`.
        tfidf: The lexical head (:class:`bertfit.lexical.LexicalHead`, the same TF-IDF + logistic regression
            fitted on ``train``) and the seconds it took, when the validation stage fitted it already.

    Returns:
        ``{name: {"metrics": compute_metrics dict, "seconds": fit + predict time}}`` for each name in
        :data:`BASELINES`, in that order.

    Raises:
        DataError: Fewer than two training classes, or validation labels unseen in training.
        ConfigError: ``positive_label`` is not a training label.
        ModelError: The encoder cannot be loaded.

    >>> results = run_baselines(*train_val_split(load_data("examples/sms_spam.csv")))  # doctest: +SKIP
    >>> round(results["tfidf_logreg"]["metrics"]["macro_f1"], 3)  # doctest: +SKIP
    0.95
    """
    labels = train.classes
    if len(labels) < 2:
        raise DataError(
            f"training data {train.source} has a single class {labels}; a classifier needs at least two classes "
            "(check --label-column)"
        )
    if train.multi_label:
        validation = validation.as_multi_label()
    check_validation(train, validation)
    positive = _positive_label(positive_label, train, labels)
    embed = (model_name_or_path, max_length, batch_size)
    predictors = _predictors(train, validation, labels, embeddings, tfidf, embed)
    results: dict[str, dict[str, Any]] = {}
    for name in BASELINES:
        start = time.perf_counter()
        predictions = predictors[name]()
        seconds = time.perf_counter() - start
        if name == "frozen_embeddings_logreg" and embeddings is not None:
            seconds += embeddings[2]  # the forward passes done before training
        if name == "tfidf_logreg" and tfidf is not None:
            seconds += tfidf[1]  # the fit done by the validation stage
        metrics = compute_metrics(validation.labels, predictions, labels, positive)
        results[name] = {"metrics": metrics, "seconds": seconds}
        logger.info("baseline %s: macro-F1 %.4f in %.1f s", name, metrics["macro_f1"], seconds)
    return results


def _predictors(train, validation, labels, embeddings, tfidf, embed) -> dict[str, Callable[[], list]]:
    # Each baseline's validation predictions, made when called (in BASELINES order, each timed).
    def tfidf_predictions() -> list:
        if tfidf is None:
            return _tfidf_logreg(train, validation, labels)
        return [tfidf[0].labels[k] for k in tfidf[0].scores(validation.texts).argmax(axis=1)]  # the lexical head

    return {
        "majority_class": lambda: _majority_class(train, validation),
        "tfidf_logreg": tfidf_predictions,
        "frozen_embeddings_logreg": lambda: _frozen_embeddings_logreg(
            train, validation, labels, embeddings or _embed(embed[0], train, validation, *embed[1:])
        ),
    }


def format_baselines(results: dict[str, dict[str, Any]], multi_label: bool = False) -> str:
    """A table of the baselines: accuracy, macro-F1, the positive class's F1 (binary tasks) and seconds; for
    multi-label tasks subset accuracy, micro-F1, macro-F1, Hamming loss and seconds."""
    if multi_label:
        return _format_multi_label(results)
    binary = all("positive_label" in r["metrics"] for r in results.values())
    f1_header = f"F1 {next(iter(results.values()))['metrics']['positive_label']!r}" if binary else ""
    lines = [f"  {'model':<28}{'accuracy':>10}{'macro-F1':>10}{f1_header:>14}{'seconds':>10}"]
    for name, result in results.items():
        m = result["metrics"]
        f1 = f"{m['f1']:.4f}" if binary else ""
        lines.append(f"  {name:<28}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}{f1:>14}{result['seconds']:>10.1f}")
    return "\n".join(lines)


def _format_multi_label(results: dict[str, dict[str, Any]]) -> str:
    columns = (("subset acc.", "subset_accuracy"), ("micro-F1", "micro_f1"), ("macro-F1", "macro_f1"))
    columns += (("Hamming", "hamming_loss"),)
    lines = [f"  {'model':<28}" + "".join(f"{name:>12}" for name, _ in columns) + f"{'seconds':>10}"]
    for name, result in results.items():
        scores = "".join(f"{result['metrics'][key]:>12.4f}" for _, key in columns)
        lines.append(f"  {name:<28}{scores}{result['seconds']:>10.1f}")
    lines.append(
        "  (multi-label: each baseline predicts a label at probability 0.5; fine-tuning tunes a threshold per label)"
    )
    return "\n".join(lines)


def _positive_label(requested: str | None, train: TextDataset, labels: list[str]) -> str | None:
    # The same rule as training, so the positive-class scores compare.
    if len(labels) != 2 or train.multi_label:
        if requested is not None:
            logger.warning("ignoring positive_label %r: the task has %d classes, not 2", requested, len(labels))
        return None
    if requested is None:
        return minority_label(train.labels)
    if requested not in labels:
        raise ConfigError(
            f"positive_label {requested!r} is not a label of the training data {labels}; "
            "pass --positive-label with one of them"
        )
    return requested


def _majority_class(train: TextDataset, validation: TextDataset) -> list:
    # The most frequent label, or label set (often a single common label), for every text.
    return [majority_label(train.labels)] * len(validation)


def _fit_predict(estimator, train_features, val_features, train: TextDataset, labels: list[str]) -> list:
    """Fit ``estimator`` and predict validation: label names, or for multi-label data one-vs-rest label sets."""
    if not train.multi_label:
        return estimator.fit(train_features, train.labels).predict(val_features).tolist()
    from sklearn.multiclass import OneVsRestClassifier

    model = OneVsRestClassifier(estimator).fit(train_features, multi_hot(train.labels, labels))
    # Each label at probability 0.5.
    return DecisionRule(tuple(labels), multi_label=True).names(model.predict(val_features).astype(bool))


def _tfidf_logreg(train: TextDataset, validation: TextDataset, labels: list[str]) -> list:
    from sklearn.linear_model import LogisticRegression

    from .lexical import tfidf_features

    vectorizer, features = tfidf_features(train.texts, train.source)  # the lexical head's features
    classifier = LogisticRegression(max_iter=1000, class_weight="balanced")
    return _fit_predict(classifier, features, vectorizer.transform(validation.texts), train, labels)


def _frozen_embeddings_logreg(train: TextDataset, validation: TextDataset, labels: list[str], embeddings) -> list:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, class_weight="balanced"))
    return _fit_predict(classifier, embeddings[0], embeddings[1], train, labels)


def _embed(model_name_or_path, train: TextDataset, validation: TextDataset, max_length: int, batch_size: int):
    path = resolve_model(model_name_or_path)
    # Loaded through the classifier loader for its ModelError messages; only the encoder under the (unused,
    # randomly initialized) head runs.
    model = load_sequence_classifier(path)
    return frozen_embeddings(model, load_tokenizer(path), train.texts, validation.texts, max_length, batch_size)


def frozen_embeddings(
    model,
    tokenizer,
    train_texts: list[str],
    validation_texts: list[str],
    max_length: int,
    batch_size: int,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """The frozen-embedding baseline's features: ``model``'s encoder's mean-pooled last hidden states of both splits
    (texts truncated to ``max_length``, at most the model's limit); fp32 vectors, and the seconds they took.

    Where ``auto`` precision is bf16 the forward runs on a bf16 copy of the encoder, without autocast: a reference's
    features need no fp32 layer norms, and autocast's casts between them and the bf16 matrix products were a quarter
    of the forward (2.1 s against 2.7 s for 2,872 SST-2 sentences on this project's 2-core CPU; the features move by
    at most 0.02). Elsewhere (fp16: its range is too narrow for a whole forward; fp32) under ``auto``'s autocast.

    ``model`` must still hold its pretrained weights: ``bertfit train`` calls this before training. With a
    ``cache_dir`` (:func:`bertfit.cache.cache_directory`), vectors computed before for the same encoder weights,
    tokenizer, texts, cut and precision are read back instead of computed (:func:`bertfit.cache.embeddings_cached`).
    """
    import torch

    start = time.perf_counter()
    precision = resolve_precision("auto")
    encoder = model.base_model
    was_training = encoder.training
    encoder.eval().to(precision.device)
    cut = min(max_length, model_max_length(tokenizer, encoder.config))
    weights = encoder_digest(encoder) if cache_dir is not None else ""
    whole_bf16 = precision.name == "bf16"

    @functools.cache
    def runs():  # made when a split is computed (not when both are read from the cache)
        return copy.deepcopy(encoder).to(torch.bfloat16) if whole_bf16 else encoder

    def compute(texts: list[str]) -> np.ndarray:
        return torch_embeddings(runs(), tokenizer, texts, cut, precision, batch_size, autocast=not whole_bf16)

    key = "bf16-weights" if whole_bf16 else precision.name
    out = [
        embeddings_cached(functools.partial(compute, texts), weights, tokenizer, texts, cut, key, cache_dir)
        for texts in (train_texts, validation_texts)
    ]
    encoder.train(was_training)
    return out[0], out[1], time.perf_counter() - start
