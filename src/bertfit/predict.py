"""Prediction over files: stream the input in chunks, write label, score and class probabilities in input order.

A multi-label model's rows hold ``labels`` (the predicted label set) instead of ``label`` and ``score``.
"""

from __future__ import annotations

import collections
import csv
import json
import logging
import multiprocessing
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .data import iter_text_chunks
from .exceptions import DataError, OutputExistsError
from .files import atomic_file
from .model import load_classifier
from .predictor import Predictor

__all__ = ["predict_file", "label_separator", "BatchPredictor"]

logger = logging.getLogger(__name__)

_OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_WORKER_CHUNK_SIZE = 1024
DEFAULT_LABEL_SEP = ";"


def label_separator(classifier: Predictor) -> str:
    """What joins a multi-label prediction in CSV output: the model's training ``label_sep``, else ``";"``."""
    training = classifier.card.training
    return (training.config.get("label_sep") if training else None) or DEFAULT_LABEL_SEP


class BatchPredictor:
    """A callable for batch engines that adds ``label``, ``score`` and ``prob_<label>`` columns to each batch
    (a multi-label model: ``labels``, each row's list of predicted labels, and ``prob_<label>``).

    It loads the model once (per engine worker) and takes a batch as a dict of columns or a pandas DataFrame, so it
    fits Ray Data's ``map_batches`` on a cluster as well as ``datasets.Dataset.map(batched=True)`` on one machine.

    Args:
        model_dir: A model directory written by ``bertfit train``.
        text_column: Column of the batch holding the texts.
        batch_size: Texts per forward pass.

    >>> ds = ray.data.read_csv("s3://bucket/texts/")  # doctest: +SKIP
    >>> ds = ds.map_batches(BatchPredictor, fn_constructor_args=("runs/spam",), concurrency=8)  # doctest: +SKIP
    """

    def __init__(self, model_dir: str | Path, text_column: str = "text", batch_size: int = 128) -> None:
        self.classifier = load_classifier(model_dir, batch_size=batch_size)
        self.text_column = text_column

    def __call__(self, batch):
        texts = [str(text) for text in batch[self.text_column]]
        probs = self.classifier.predict_proba(texts)  # (n_texts, n_labels)
        out = batch.copy()
        for name, column in self.classifier.decision.columns(probs).items():
            out[name] = column
        return out


def predict_file(
    classifier: Predictor,
    input_path: str | Path,
    output_path: str | Path,
    *,
    text_column: str = "text",
    sep: str | None = None,
    encoding: str = "utf-8",
    chunk_size: int = 10_000,
    overwrite: bool = False,
    num_workers: int = 1,
    label_sep: str | None = None,
) -> int:
    """Predict every text of ``input_path`` and write its prediction rows (see
    :meth:`bertfit.predictor.Predictor.prediction_rows`) to ``output_path``.

    The input is read in chunks, so memory stays flat whatever its size; the output (CSV or JSONL, by suffix) keeps
    the input order and appears only when complete. With ``num_workers > 1``, that many processes (each holding a
    copy of the model and an equal share of the CPU threads) predict chunks of the file in parallel. A multi-label
    model's ``labels`` are a list in JSONL and one cell joined by ``label_sep`` in CSV (default: the separator the
    model was trained with, else ``";"``).

    Returns:
        The number of rows written.

    Raises:
        DataError: The input cannot be read or the output format is unknown.
        OutputExistsError: ``output_path`` exists and ``overwrite`` is False.
    """
    output_path = Path(output_path)
    kind = _OUTPUT_FORMATS.get(output_path.suffix.lower())
    if kind is None:
        raise DataError(f"unknown output format {output_path.suffix or '(none)'} of {output_path}; use .csv or .jsonl")
    if output_path.exists() and not overwrite:
        raise OutputExistsError(
            f"output file {output_path} already exists; pass --overwrite or choose another --output"
        )
    rows_written = 0
    with atomic_file(output_path, newline="") as handle:
        predicted = ["labels"] if classifier.multi_label else ["label", "score"]
        fields = ["text", *predicted] + [f"prob_{label}" for label in classifier.labels]
        joiner = label_sep or label_separator(classifier)
        writer = csv.DictWriter(handle, fieldnames=fields) if kind == "csv" else None
        if writer is not None:
            writer.writeheader()
        if num_workers > 1:  # small tasks keep every worker busy and need little buffering to keep the order
            chunk_size = min(chunk_size, _WORKER_CHUNK_SIZE)
        chunks = iter_text_chunks(input_path, text_column, sep=sep, encoding=encoding, chunk_size=chunk_size)
        for rows in _predicted_chunks(classifier, chunks, num_workers):
            if writer is not None:
                writer.writerows(_joined(rows, joiner) if classifier.multi_label else rows)
            else:
                handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            rows_written += len(rows)
            logger.info("predicted %d rows", rows_written)
    return rows_written


def _joined(rows: list[dict], label_sep: str) -> list[dict]:
    return [{**row, "labels": label_sep.join(row["labels"])} for row in rows]


def _predicted_chunks(classifier: Predictor, chunks: Iterable[list[str]], num_workers: int) -> Iterator[list]:
    """The prediction rows of each chunk, in order; computed by ``num_workers`` processes when it is above 1."""
    if num_workers <= 1:
        yield from (classifier.prediction_rows(texts) for texts in chunks)
        return
    threads = max(1, (os.cpu_count() or 1) // num_workers)
    # spawn, not fork: forking a process whose torch/tokenizers thread pools are running can deadlock.
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, initializer=_start_worker, initargs=(classifier, threads)) as pool:
        pending: collections.deque = collections.deque()
        for texts in chunks:
            pending.append(pool.apply_async(_predict_in_worker, (texts,)))
            if len(pending) >= 2 * num_workers:  # bounded read-ahead: memory stays flat
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_worker_classifier: Predictor | None = None


def _start_worker(classifier: Predictor, threads: int) -> None:
    global _worker_classifier
    import torch

    torch.set_num_threads(threads)
    if hasattr(classifier, "set_threads"):  # an ONNX export: onnxruntime has its own thread pool
        classifier.set_threads(threads)
    _worker_classifier = classifier


def _predict_in_worker(texts: list[str]) -> list[dict]:
    return _worker_classifier.prediction_rows(texts)
