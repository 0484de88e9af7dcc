"""Prediction over files and pipes: stream the input in chunks, write label, score and class probabilities in input
order.

A multi-label model's rows hold ``labels`` (the predicted label set) instead of ``label`` and ``score``. ``-`` names
stdin as an input (one text per line, or JSONL) and stdout as an output.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import logging
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from .exceptions import ConfigError, DataError, OutputExistsError
from .files import atomic_file
from .model import load_classifier
from .predictor import Predictor

__all__ = [
    "predict_file",
    "predicted_chunks",
    "prediction_lines",
    "stdin_chunks",
    "label_separator",
    "BatchPredictor",
    "STDIO",
]

logger = logging.getLogger(__name__)

_OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_WORKER_CHUNK_SIZE = 1024
STDIN_CHUNK_SIZE = 256  # texts from stdin are predicted (and their rows written) this many at a time, or at its end
STDIO = "-"  # the file name of stdin (input) and stdout (output)
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
    output_path: str | Path | None,
    *,
    text_column: str = "text",
    sep: str | None = None,
    encoding: str = "utf-8",
    chunk_size: int = 10_000,
    overwrite: bool = False,
    num_workers: int = 1,
    label_sep: str | None = None,
    output_format: str = "csv",
    keep_columns: Sequence[str] = (),
) -> int:
    """Predict every text of ``input_path`` and write its prediction rows (see
    :meth:`bertfit.predictor.Predictor.prediction_rows`) to ``output_path``.

    The input is read in chunks, so memory stays flat whatever its size; the output (CSV or JSONL, by suffix) keeps
    the input order and appears only when complete. With ``num_workers > 1``, that many processes (each holding a
    copy of the model and an equal share of the CPU threads) predict chunks of the file in parallel. A multi-label
    model's ``labels`` are a list in JSONL and one cell joined by ``label_sep`` in CSV (default: the separator the
    model was trained with, else ``";"``).

    ``keep_columns`` of the input (e.g. an id) are written too, first, each row beside its prediction; a file input
    only, and no name that a prediction column has.

    ``input_path`` ``"-"`` reads the texts from stdin (see :func:`stdin_chunks`); ``output_path`` ``"-"`` or None
    writes to stdout in ``output_format`` (``"csv"`` or ``"jsonl"``), a chunk at a time as each is predicted.

    Returns:
        The number of rows written.

    Raises:
        DataError: The input cannot be read, lacks a ``keep_columns`` column, or the output format is unknown.
        ConfigError: ``keep_columns`` with stdin, or naming a prediction column.
        OutputExistsError: ``output_path`` exists and ``overwrite`` is False, or is the input file.
    """
    if num_workers > 1:  # small tasks keep every worker busy and need little buffering to keep the order
        chunk_size = min(chunk_size, _WORKER_CHUNK_SIZE)
    keep = _check_keep_columns(classifier, list(keep_columns), input_path)
    if output_path is None or str(output_path) == STDIO:
        if output_format not in _OUTPUT_FORMATS.values():
            raise DataError(f"unknown output format {output_format!r}; use csv or jsonl")
        chunks = _row_chunks(input_path, text_column, keep, sep, encoding, chunk_size)
        return _write_rows(classifier, chunks, sys.stdout, output_format, label_sep, num_workers, keep, "\n")
    output_path = Path(output_path)
    kind = _OUTPUT_FORMATS.get(output_path.suffix.lower())
    if kind is None:
        raise DataError(f"unknown output format {output_path.suffix or '(none)'} of {output_path}; use .csv or .jsonl")
    if output_path.exists() and not overwrite:
        raise OutputExistsError(
            f"output file {output_path} already exists; pass --overwrite or choose another --output"
        )
    if output_path.exists() and str(input_path) != STDIO and output_path.resolve() == Path(input_path).resolve():
        raise OutputExistsError(
            f"--output {output_path} is the --input file: --overwrite would replace it, and the columns other than "
            "the texts, with the predictions; choose another --output"
        )
    with atomic_file(output_path, newline="") as handle:
        chunks = _row_chunks(input_path, text_column, keep, sep, encoding, chunk_size)
        return _write_rows(classifier, chunks, handle, kind, label_sep, num_workers, keep)


def _check_keep_columns(classifier: Predictor, keep: list[str], input_path) -> list[str]:
    if keep and str(input_path) == STDIO:
        raise ConfigError("--keep-columns needs an --input file: stdin lines carry only their texts")
    taken = set(_fields(classifier)) & set(keep)
    if taken:
        raise ConfigError(
            f"--keep-columns {sorted(taken)} would share a name with the prediction columns {_fields(classifier)}; "
            "keep other columns (a gold label column is scored by 'bertfit evaluate')"
        )
    return list(dict.fromkeys(keep))


def _fields(classifier: Predictor) -> list[str]:
    predicted = ["labels"] if classifier.multi_label else ["label", "score"]
    return ["text", *predicted] + [f"prob_{label}" for label in classifier.labels]


def _row_chunks(input_path, text_column: str, keep: list[str], sep, encoding: str, chunk_size: int):
    # (texts, {kept column: cells}) per chunk, in input order.
    if str(input_path) == STDIO:
        texts = stdin_chunks(text_column, encoding=encoding, chunk_size=min(chunk_size, STDIN_CHUNK_SIZE))
        return ((chunk, {}) for chunk in texts)
    from .data import iter_row_chunks  # pandas: only where a file is read

    return iter_row_chunks(input_path, text_column, keep, sep=sep, encoding=encoding, chunk_size=chunk_size)


def _write_rows(
    classifier: Predictor,
    chunks: Iterable[tuple[list[str], dict[str, list]]],
    handle: TextIO,
    kind: str,
    label_sep: str | None,
    num_workers: int,
    keep: list[str],
    lineterminator: str = "\r\n",
) -> int:
    # The rows of every chunk, in input order, as CSV (header first) or JSONL; flushed after each chunk. The kept
    # cells of a chunk wait in `kept` while its texts are predicted (read-ahead with several workers).
    fields = [*keep, *_fields(classifier)]
    joiner = label_sep or label_separator(classifier)
    writer = csv.DictWriter(handle, fieldnames=fields, lineterminator=lineterminator) if kind == "csv" else None
    if writer is not None:
        writer.writeheader()
    kept: collections.deque = collections.deque()

    def texts_of_chunks() -> Iterator[list[str]]:
        for texts, cells in chunks:
            kept.append(cells)
            yield texts

    rows_written = 0
    for rows in predicted_chunks(classifier, texts_of_chunks(), num_workers):
        cells = kept.popleft()
        if keep:
            rows = [{**{c: _kept_cell(cells[c][i], kind, joiner) for c in keep}, **row} for i, row in enumerate(rows)]
        if writer is not None:
            writer.writerows(_joined(rows, joiner) if classifier.multi_label else rows)
        else:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        handle.flush()
        rows_written += len(rows)
        logger.info("predicted %d rows", rows_written)
    return rows_written


def stdin_chunks(
    text_column: str = "text", *, encoding: str = "utf-8", chunk_size: int = STDIN_CHUNK_SIZE
) -> Iterator[list[str]]:
    """The texts of stdin in chunks of at most ``chunk_size``, in order, read as they arrive.

    The first line decides the format: a JSON object makes stdin JSONL (one object per line, the text in its
    ``text_column`` field; blank lines skipped); anything else makes it plain text, one text per line (a blank line
    is an empty text, so that every line gets an output row).

    Raises:
        DataError: Stdin is not in ``encoding``, or a JSONL line is not an object with a string ``text_column``.
    """
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding=encoding, newline=None)  # \r\n and \r end lines too
    try:
        chunk: list[str] = []
        jsonl = None
        for number, line in enumerate(_decoded_lines(stream, encoding), start=1):
            line = line.removesuffix("\n")
            if jsonl is None:
                jsonl = _is_json_object(line)
            if jsonl and not line.strip():
                continue
            chunk.append(_jsonl_text(line, text_column, number) if jsonl else line)
            if len(chunk) >= chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
    finally:
        stream.detach()  # leave sys.stdin's buffer open


def _decoded_lines(stream: TextIO, encoding: str) -> Iterator[str]:
    try:
        # Lines by readline: `yield from stream` would close the stream (and stdin) when this generator is closed.
        yield from iter(stream.readline, "")
    except UnicodeDecodeError as err:
        raise DataError(f"stdin is not valid {encoding} ({err.reason} at byte {err.start}); pass --encoding") from None


def _is_json_object(line: str) -> bool:
    if not line.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _jsonl_text(line: str, text_column: str, number: int) -> str:
    where = f"stdin line {number}"
    try:
        value = json.loads(line)
    except ValueError as err:
        raise DataError(f"{where} is not JSON ({err}); stdin is JSONL because its first line is") from None
    if not isinstance(value, dict):
        raise DataError(f"{where} is not a JSON object; stdin is JSONL because its first line is one")
    if text_column not in value:
        raise DataError(f"{where} has no {text_column!r} field (found {sorted(value)}); pass --text-column")
    text = value[text_column]
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return str(text)  # as the file readers read numbers: their digits
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: {text_column!r} holds a {type(text).__name__}, not a text")
    return text or ""


def prediction_lines(
    classifier: Predictor,
    chunks: Iterable[list[str]],
    *,
    as_json: bool = False,
    label_sep: str | None = None,
    num_workers: int = 1,
) -> Iterator[str]:
    """One printable line per text, in input order: label, score and text tab-separated (multi-label: the labels
    and their probabilities, each joined by ``label_sep``), or with ``as_json`` the JSON object of the text's
    prediction row (the row a ``.jsonl`` output holds)."""
    joiner = label_sep or label_separator(classifier)
    for rows in predicted_chunks(classifier, chunks, num_workers):
        for row in rows:
            if as_json:
                yield json.dumps(row, ensure_ascii=False)
            elif classifier.multi_label:
                scores = joiner.join(f"{row[f'prob_{label}']:.4f}" for label in row["labels"])
                yield f"{joiner.join(row['labels'])}\t{scores}\t{row['text']}"
            else:
                yield f"{row['label']}\t{row['score']:.4f}\t{row['text']}"


def _kept_cell(cell, kind: str, joiner: str):
    # A list cell (JSONL, Parquet): a list in JSONL, one cell joined like multi-label labels in CSV.
    if isinstance(cell, tuple):
        return list(cell) if kind == "jsonl" else joiner.join(cell)
    return cell


def _joined(rows: list[dict], label_sep: str) -> list[dict]:
    return [{**row, "labels": label_sep.join(row["labels"])} for row in rows]


def predicted_chunks(classifier: Predictor, chunks: Iterable[list[str]], num_workers: int) -> Iterator[list]:
    """The prediction rows of each chunk of texts, in order; computed by ``num_workers`` processes when it is above 1
    (at most ``2 * num_workers`` chunks in flight, so memory stays flat)."""
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
