"""Reading labelled text from files, label mapping, stratified splits and length statistics.

Supported inputs: CSV, TSV, JSONL, JSON, Parquet (text formats may be gzipped), headerless ``text<sep>label`` text
files (``.txt`` with an explicit ``sep``), and a folder written by ``datasets.Dataset(Dict).save_to_disk``.

A label cell holds one label (single-label data), or several: a list (JSONL, JSON, Parquet, saved datasets) or a
string split at ``label_sep`` (e.g. ``"joy;love"``). Multi-label rows are tuples of label names; an empty tuple is a
text with no label.

Cells are read as strings or refused, never turned into their Python repr: bytes (Parquet/Arrow binary columns) are
decoded as UTF-8; numbers become their digits (``3.0`` as ``"3"``); booleans are labels ``"True"``/``"False"`` but not
texts; lists are label sets but not texts; mappings, nested lists, other objects and strings holding a lone UTF-16
surrogate (a broken ``\\ud800`` JSON escape, which no tokenizer takes) are a DataError naming the column and row. A
column name given twice in a file (a CSV header ``text,text,label``, a JSON object with the key twice, a Parquet
schema) is a DataError too, when it is one of the columns read.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import math
import numbers
import re
import zlib
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataError

__all__ = [
    "TextDataset",
    "load_data",
    "label_set",
    "read_columns",
    "iter_text_chunks",
    "iter_row_chunks",
    "sorted_labels",
    "train_val_split",
    "check_validation",
    "data_source",
]

logger = logging.getLogger(__name__)

_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
_SUPPORTED = ".csv, .tsv, .jsonl, .json, .parquet (text formats may end in .gz), .txt with --sep"


@dataclass(frozen=True)
class TextDataset:
    """Texts with one label name each (single-label), or a set of label names each (multi-label), in file order.

    Args:
        texts: The input texts.
        labels: One label name per text (labels are always strings; integer labels become "0", "1", ...), or, for
            multi-label data, one collection of label names per text (a list, tuple or set; may be empty). Such rows
            are stored as tuples without duplicates, in :attr:`classes` order.
        source: Where the data came from, for messages.

    >>> ds = TextDataset(["good film", "bad film"], ["pos", "neg"])
    >>> len(ds), ds.classes
    (2, ['neg', 'pos'])
    >>> TextDataset(["a", "b", "c"], [["joy", "love"], ["joy"], []]).labels
    [('joy', 'love'), ('joy',), ()]
    """

    texts: list[str]
    labels: list[str] | list[tuple[str, ...]]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(
                f"got {len(self.texts)} texts but {len(self.labels)} labels from {self.source}"
                "; pass one label per text"
            )
        rows = [_is_label_collection(label) for label in self.labels]
        if any(rows):
            if not all(rows):
                first = rows.index(False)
                raise DataError(
                    f"{self.source} mixes single labels (e.g. row {first + 1}: {self.labels[first]!r}) with lists of "
                    "labels; give every row a list of labels for multi-label data"
                )
            object.__setattr__(self, "labels", _canonical_sets(self.labels))
        elif not all(isinstance(label, str) for label in self.labels):
            # None and NaN (pandas' empty cell) would become classes named "None" and "nan".
            missing = [i + 1 for i, label in enumerate(self.labels) if _is_missing(label)]
            if missing:
                raise DataError(
                    f"{len(missing)} text(s) of {self.source} have no label (None or NaN: rows {_preview(missing)}); "
                    "give every text a label, or drop those rows"
                )
            object.__setattr__(self, "labels", [str(label) for label in self.labels])

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def multi_label(self) -> bool:
        """Whether each text carries a set of labels (tuples) rather than one label."""
        return bool(self.labels) and isinstance(self.labels[0], tuple)

    @property
    def classes(self) -> list[str]:
        """The sorted distinct labels (of all rows' sets, for multi-label data)."""
        if self.multi_label:
            return sorted_labels({label for row in self.labels for label in row})
        return sorted_labels(self.labels)

    def label_counts(self) -> dict[str, int]:
        """Rows per label, in sorted label order (a multi-label row counts once for each of its labels)."""
        counts = Counter(label for row in self.labels for label in row) if self.multi_label else Counter(self.labels)
        return {label: counts[label] for label in self.classes}

    def fingerprint(self) -> str:
        """A short sha256 of the texts and labels, to tell datasets apart."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            if isinstance(label, tuple):  # a label set: names joined by a byte no label holds
                label = "\x1d".join(label)
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x1f" + label.encode() + b"\x1e")
        return digest.hexdigest()[:16]

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The rows at ``indices``, in that order."""
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.source)

    def as_multi_label(self, label_sep: str | None = None) -> TextDataset:
        """This data as multi-label rows: each single label split at ``label_sep`` (or taken whole) into a set.

        Multi-label data is returned as it is.

        >>> TextDataset(["a", "b"], ["joy;love", "joy"]).as_multi_label(";").labels
        [('joy', 'love'), ('joy',)]
        """
        if self.multi_label or not self.labels:
            return self
        return TextDataset(self.texts, [label_set(label, label_sep) for label in self.labels], self.source)


def label_set(cell: str | Sequence[str] | None, label_sep: str | None = None) -> tuple[str, ...]:
    """The distinct label names of one label cell, sorted: a list's items, or a string split at ``label_sep``
    (taken whole without one); surrounding spaces and empty parts are dropped, a missing cell is the empty set.

    >>> label_set(" love; joy ;", ";")
    ('joy', 'love')
    """
    if cell is None:
        return ()
    parts = (cell.split(label_sep) if label_sep else [cell]) if isinstance(cell, str) else cell
    return tuple(sorted({part.strip() for part in parts if part is not None and part.strip()}))


def _is_label_collection(value) -> bool:
    return isinstance(value, (list, tuple, set, frozenset, np.ndarray))


def _canonical_sets(rows) -> list[tuple[str, ...]]:
    # Distinct names as strings, ordered as the classes (numeric order for integer labels), so that a row reads like
    # a prediction of the model.
    sets = [{str(label) for label in row} for row in rows]
    rank = {label: k for k, label in enumerate(sorted_labels({label for row in sets for label in row}))}
    return [tuple(sorted(row, key=rank.__getitem__)) for row in sets]


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Distinct labels sorted numerically when they are all integers ("2" before "10"), else alphabetically."""
    distinct = set(labels)
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def data_source(data: str | Path | TextDataset | None) -> str | None:
    """The file a run reads ``data`` from (a path as given, or a dataset's ``source``), for messages and checks."""
    return str(data) if isinstance(data, (str, Path)) else getattr(data, "source", None)


def load_data(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    split: str | None = None,
    label_sep: str | None = None,
) -> TextDataset:
    """Read a labelled text file into a :class:`TextDataset`.

    Rows with an empty or missing text are dropped with a warning; a text cell that is not a string is decoded or
    refused (module docstring: bytes are decoded as UTF-8, numbers become their digits, lists, mappings and booleans
    are a DataError). Single-label data: a row without a label is an error. Multi-label data (``label_sep``
    given, or a label column of lists): a row without a label is a text with none of the labels.

    Args:
        path: A CSV/TSV/JSONL/JSON/Parquet file (text formats may be gzipped), a ``.txt`` file of headerless
            ``text<sep>label`` lines, or a ``save_to_disk`` folder of the ``datasets`` library.
        text_column: Column holding the texts.
        label_column: Column holding the labels (strings or integers, or lists of them for multi-label data).
        sep: Field separator; overrides the one implied by the file suffix. Required for ``.txt`` files.
        encoding: Text encoding of the file.
        split: Split to read from a saved ``DatasetDict`` folder (default ``train``).
        label_sep: Separator between the labels of a multi-label cell, e.g. ``";"`` for ``"joy;love"``.

    Returns:
        The dataset, labels as strings (multi-label: tuples of strings).

    Raises:
        DataError: The file is missing, empty, in an unknown format, undecodable, lacks a column or has it twice,
            holds a text that is not a string (a list, mapping, boolean, undecodable bytes), or has rows without
            labels (single-label) or no usable text at all, or ``text_column`` and ``label_column`` are the same.

    >>> ds = load_data("examples/sms_spam.csv")  # doctest: +SKIP
    >>> ds = load_data("go_emotions/train.csv", label_column="labels", label_sep=";")  # doctest: +SKIP
    """
    path = Path(path)
    if text_column == label_column:
        raise DataError(
            f"text_column and label_column are both {text_column!r}: the labels need a column of their own; name it "
            "with --label-column (and the texts' with --text-column)"
        )
    columns = read_columns(
        path, [text_column, label_column], text_column=text_column, sep=sep, encoding=encoding, split=split
    )
    texts, labels = columns[text_column], columns[label_column]
    multi_label = label_sep is not None or any(isinstance(label, tuple) for label in labels)
    if not multi_label:
        _require_labels(labels, path, label_column)
    keep = [i for i, text in enumerate(texts) if text is not None and text.strip() != ""]
    if not keep:
        raise DataError(f"every row of {path} has an empty text in column {text_column!r}; check --text-column")
    if len(keep) < len(texts):
        logger.warning(
            "dropped %d of %d rows of %s with an empty or missing text", len(texts) - len(keep), len(texts), path
        )
    if multi_label:
        return TextDataset([texts[i] for i in keep], [label_set(labels[i], label_sep) for i in keep], str(path))
    dataset = TextDataset([texts[i] for i in keep], [labels[i].strip() for i in keep], str(path))
    _warn_joined_labels(dataset.classes, path)
    return dataset


def _warn_joined_labels(classes: list[str], path: Path) -> None:
    # "joy;love" beside "joy" and "love": a multi-label file read without --label-sep, where every combination would
    # silently become a class of its own. Only labels made wholly of other labels count, so "Hello, world" does not.
    names = set(classes)
    for sep in (";", "|", ","):
        joined = [name for name in classes if sep in name and all(part.strip() in names for part in name.split(sep))]
        if joined:
            logger.warning(
                "%d label(s) of %s join other labels with %r (e.g. %r): if a text can carry several labels, pass "
                "--label-sep %r to train a multi-label model; as read, each combination is a class of its own",
                len(joined),
                path,
                sep,
                joined[0],
                sep,
            )
            return


def _require_labels(labels: list, path: Path, label_column: str) -> None:
    missing = [i + 1 for i, label in enumerate(labels) if label is None or label.strip() == ""]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) of {path} have no value in label column {label_column!r} "
            f"(data rows {_preview(missing)}); fill in or remove those rows, or, if the column holds label sets "
            "where an empty cell means no label, pass --label-sep"
        )


def read_columns(
    path: str | Path,
    columns: list[str],
    *,
    text_column: str | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
    split: str | None = None,
) -> dict[str, list[str | tuple[str, ...] | None]]:
    """The named columns of a data file, each a list of strings in file order (None where a cell is missing; a
    tuple of strings where a cell is a list, as multi-label columns of JSONL or Parquet files are).

    Cells are converted as the module docstring says; ``text_column`` (one of ``columns``) holds texts, so a list
    or boolean there is an error rather than a label set or name. Unlike :func:`load_data` nothing is dropped or
    checked beyond that and the columns' presence: explore counts what is missing.

    Raises:
        DataError: The file is missing, empty, in an unknown format, undecodable, lacks a column or has it twice,
            or holds a cell that is neither a text nor a label.
    """
    path = Path(path)
    frames = list(_read_chunks(path, sep=sep, encoding=encoding, split=split, chunk_size=None, columns=columns))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(frame) == 0:
        raise DataError(f"{path} has no data rows; give a file with at least one labelled text per class")
    _require_columns(frame, columns, path)
    return {
        column: _column_cells(frame[column].tolist(), column, path, texts=column == text_column) for column in columns
    }


def iter_text_chunks(
    path: str | Path,
    text_column: str = "text",
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    chunk_size: int = 10_000,
) -> Iterator[list[str]]:
    """Stream the texts of a file in chunks of at most ``chunk_size``, in file order, for prediction.

    Missing texts come back as empty strings so that every input row gets an output row; other cells are read as
    :func:`load_data` reads texts (bytes decoded, numbers as their digits, lists and mappings refused).

    Raises:
        DataError: As :func:`load_data`.
    """
    for texts, _ in iter_row_chunks(path, text_column, sep=sep, encoding=encoding, chunk_size=chunk_size):
        yield texts


def iter_row_chunks(
    path: str | Path,
    text_column: str = "text",
    keep: Sequence[str] = (),
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    chunk_size: int = 10_000,
) -> Iterator[tuple[list[str], dict[str, list]]]:
    """As :func:`iter_text_chunks`, with the cells of the ``keep`` columns of the same rows: ``(texts, {column:
    cells})`` per chunk, each cell a string, None where empty, or a tuple of strings for a list cell.

    Raises:
        DataError: As :func:`load_data`, or a ``keep`` column is not in the file.
    """
    path = Path(path)
    first_row = 1
    columns = [text_column, *[column for column in keep if column != text_column]]
    for frame in _read_chunks(path, sep=sep, encoding=encoding, split=None, chunk_size=chunk_size, columns=columns):
        absent = [column for column in keep if column not in frame.columns]
        if absent:
            found = sorted(str(c) for c in frame.columns)
            raise DataError(f"--keep-columns {absent} are not columns of {path} (found {found}); name columns it has")
        _require_columns(frame, [text_column], path)
        texts = _column_cells(frame[text_column].tolist(), text_column, path, texts=True, first_row=first_row)
        kept = {c: _column_cells(frame[c].tolist(), c, path, texts=False, first_row=first_row) for c in keep}
        first_row += len(frame)
        yield [text or "" for text in texts], kept


def train_val_split(dataset: TextDataset, val_size: float = 0.1, seed: int = 42) -> tuple[TextDataset, TextDataset]:
    """Split ``dataset`` into train and validation parts, stratified by label.

    Multi-label data is stratified by each row's rarest label (the label with the fewest rows in ``dataset``; rows
    without a label form a stratum of their own), so that rare labels land on both sides in proportion. Strata of a
    single row are pooled; when even that leaves a stratum too small for both sides, the split is random (logged).
    Validation rows with a label that no training row has are then moved to train, so that the model knows every
    label it is validated on.

    Args:
        dataset: The labelled data.
        val_size: Share of rows (0 < val_size < 1) that go to validation.
        seed: Random seed of the shuffle.

    Returns:
        ``(train, validation)``.

    Raises:
        DataError: A class of single-label data has too few rows to appear on both sides of the split.
    """
    from sklearn.model_selection import train_test_split

    n_val = math.ceil(len(dataset) * val_size)
    if dataset.multi_label:
        strata = _multi_label_strata(dataset, n_val)
    else:
        strata = _single_label_strata(dataset, n_val, val_size)
    indices = np.arange(len(dataset))
    train_idx, val_idx = train_test_split(indices, test_size=n_val, random_state=seed, stratify=strata)
    if dataset.multi_label:
        train_idx, val_idx = _move_unseen_to_train(dataset, train_idx, val_idx)
    return dataset.subset(sorted(train_idx)), dataset.subset(sorted(val_idx))


def _single_label_strata(dataset: TextDataset, n_val: int, val_size: float) -> list[str]:
    counts = dataset.label_counts()
    small = sorted(label for label, n in counts.items() if n < 2)
    if small:
        more = f" and {len(small) - 10} more" if len(small) > 10 else ""
        # Nearly one label per row: the label column most likely holds the texts (or ids).
        textlike = len(counts) > len(dataset) / 2
        hint = f"; {len(counts)} distinct labels in {len(dataset)} rows: check --text-column/--label-column"
        hint = hint if textlike else ""
        raise DataError(
            f"cannot make a stratified split: class(es) {small[:10]}{more} of {dataset.source} have a single row; "
            f"add more examples of those classes, remove them, or pass a --validation file{hint}"
        )
    if n_val < len(counts) or len(dataset) - n_val < len(counts):
        raise DataError(
            f"cannot make a stratified split of {len(dataset)} rows into {len(counts)} classes with "
            f"val_size={val_size}: each side needs at least one row per class; change --val-size or pass --validation"
        )
    return dataset.labels


def _multi_label_strata(dataset: TextDataset, n_val: int) -> list[str] | None:
    counts = dataset.label_counts()
    rank = {label: k for k, label in enumerate(dataset.classes)}
    # The rarest label of each row (ties: the first in label order); "" for rows without a label.
    keys = [min(row, key=lambda label: (counts[label], rank[label])) if row else "" for row in dataset.labels]
    sizes = Counter(keys)
    keys = [key if sizes[key] >= 2 else "\x00pooled" for key in keys]
    sizes = Counter(keys)
    if min(sizes.values()) < 2 or n_val < len(sizes) or len(dataset) - n_val < len(sizes):
        logger.info(
            "split %s at random: %d rows are too few to stratify %d rarest-label groups",
            dataset.source,
            len(dataset),
            len(sizes),
        )
        return None
    return keys


def _move_unseen_to_train(dataset: TextDataset, train_idx: np.ndarray, val_idx: np.ndarray):
    seen = {label for i in train_idx for label in dataset.labels[i]}
    moved = [i for i in val_idx if not set(dataset.labels[i]) <= seen]
    if moved:
        logger.info("moved %d validation row(s) with labels no training row has to train", len(moved))
        train_idx = np.concatenate([train_idx, moved])
        val_idx = np.setdiff1d(val_idx, moved)
    return train_idx, val_idx


def check_validation(train: TextDataset, validation: TextDataset) -> None:
    """Refuse validation labels unseen in train, and multi-label validation for single-label training; warn on texts
    that are in both.

    Raises:
        DataError: The validation data has labels the training data lacks, or is multi-label while the training
            data is not.
    """
    if validation.multi_label and not train.multi_label:
        raise DataError(
            f"validation data {validation.source} has several labels per text but the training data {train.source} "
            "has one; read both with the same --label-sep"
        )
    unseen = sorted(set(validation.classes) - set(train.classes))
    if unseen:
        raise DataError(
            f"validation labels {unseen} do not occur in the training data {train.source} "
            f"(training labels: {train.classes}); fix the labels or add training examples for them"
        )
    train_texts = set(train.texts)
    shared = [text for text in validation.texts if text in train_texts]
    if shared:
        logger.warning(
            "%d of %d validation texts (%d distinct) also occur in the training data; validation scores will be "
            "optimistic. Deduplicate the files to measure generalization.",
            len(shared),
            len(validation),
            len(set(shared)),
        )


def _read_chunks(
    path: Path, *, sep: str | None, encoding: str, split: str | None, chunk_size: int | None, columns: list[str]
) -> Iterator[pd.DataFrame]:
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path")
    if path.is_dir():
        kind, frames = "a saved dataset", _read_saved_dataset(path, split, chunk_size)
    else:
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty; give a file with a header and labelled rows")
        _check_encoding(encoding)
        kind = _format_of(path, sep)
        _refuse_misnamed_binary(path, kind)
        frames = _READERS[kind](path, sep=sep, encoding=encoding, chunk_size=chunk_size, columns=columns)
    where = "its header" if kind in ("csv", "tsv") else "its columns"
    try:
        for frame in frames:
            counts = Counter(frame.columns)
            _refuse_repeated_columns([column for column in columns if counts[column] > 1], path, where)
            yield frame
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not valid {encoding} text ({err.reason} at byte {err.start}); pass the file's encoding, "
            f"e.g. {_encoding_hint(path)}"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty; give a file with a header and labelled rows") from None
    except (ValueError, OSError, EOFError, zlib.error) as err:  # parse errors; EOFError, zlib.error: a broken .gz
        fix = (
            "quote the fields that hold the separator, or pass --sep" if isinstance(err, pd.errors.ParserError) else ""
        )
        raise DataError(
            f"could not read {path} as {kind.upper() if kind in _READERS else kind}: {str(err).strip()}; "
            f"{fix or 'check the file format'}"
        ) from None


# Binary files that a text reader would only report as undecodable bytes: (leading bytes, what it is, the fix).
_BINARY_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed", "add .gz to its name ({name}.gz) so bertfit decompresses it"),
    (b"PAR1", "a Parquet file", "give it a .parquet suffix"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one)", "save the sheet as CSV, or unzip the file"),
)


def _refuse_misnamed_binary(path: Path, kind: str) -> None:
    if kind == "parquet" or path.suffix.lower() == ".gz":
        return
    with _open_bytes(path) as file:
        head = file.read(4)
    for signature, what, fix in _BINARY_SIGNATURES:
        if head.startswith(signature):
            raise DataError(
                f"{path} is {what}, not {kind.upper()} text as its name says; {fix.format(name=path.name)}"
            )


def _encoding_hint(path: Path) -> str:
    with _open_bytes(path) as file:
        head = file.read(2)
    if head in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 byte-order mark: Excel's "Unicode text", Windows tools
        return "--encoding utf-16 (the file starts with a UTF-16 byte-order mark)"
    return "--encoding latin-1"


def _check_encoding(encoding: str) -> None:
    try:
        b"a".decode(encoding)
    except UnicodeError:
        pass  # a text encoding that cannot decode this one byte (utf-16): the file tells
    except (LookupError, TypeError, ValueError):  # unknown, not a text encoding (rot13), or not a name
        raise DataError(
            f"unknown text encoding {encoding!r}; pass a Python codec name such as utf-8, utf-8-sig, latin-1 or "
            "cp1252 to --encoding"
        ) from None


def _format_of(path: Path, sep: str | None) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    kind = _FORMATS.get(suffixes[-1] if suffixes else "")
    if kind == "txt" and sep is None:
        raise DataError(f"{path} is a .txt file: pass the separator between text and label, e.g. --sep ';'")
    if kind is None:
        if sep is not None:
            return "csv"
        raise DataError(
            f"unknown format of {path} (suffix {''.join(path.suffixes) or 'none'}); use one of {_SUPPORTED}"
            ", or pass --sep for a delimited text file"
        )
    return kind


def _open_text(path: Path, encoding: str, newline: str | None = None):
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    return opener(path, "rt", encoding=encoding, newline=newline)


def _open_bytes(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _read_delimited(path: Path, *, sep: str | None, encoding: str, chunk_size: int | None, columns, default: str):
    # The header is read as a data row: pandas would rename a repeated name ("text.1", so it could not be refused)
    # and an empty one ("Unnamed: 0"), and would take a first data row with one field more than the header as an
    # index, shifting its texts; read as data, every later row with more fields than the header is a ParserError.
    reader = pd.read_csv(
        path,
        sep=sep or default,
        header=None,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        encoding=encoding,
        chunksize=chunk_size,
        iterator=True,
        engine="c",
    )
    with reader:
        header = reader.get_chunk(1).iloc[0].tolist()
        for frame in [_rest(reader, len(header))] if chunk_size is None else reader:
            frame.columns = header
            yield frame


def _rest(reader, width: int) -> pd.DataFrame:
    try:
        return reader.read()
    except StopIteration:  # a header without rows
        return pd.DataFrame(columns=range(width))


def _read_csv(path: Path, **kw) -> Iterator[pd.DataFrame]:
    yield from _read_delimited(path, default=",", **kw)


def _read_tsv(path: Path, **kw) -> Iterator[pd.DataFrame]:
    yield from _read_delimited(path, default="\t", **kw)


class _JsonReader:
    """``json.loads`` that refuses an object repeating the name of one of ``columns`` as a key (the json module
    keeps the last value silently)."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path, self.columns, self.repeated = path, set(columns), set()
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object)

    def _object(self, pairs: list[tuple[str, object]]) -> dict:
        value = dict(pairs)
        if len(value) < len(pairs):
            self.repeated.update(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
        return value

    def loads(self, text: str, line: int | None = None):
        """The value of ``text``, line ``line`` of a JSONL file (None: the whole of a JSON file)."""
        self.repeated.clear()
        where = f"line {line}" if line else "the file"
        try:
            value = self.decoder.decode(text.lstrip("\ufeff") if line in (None, 1) else text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError; RecursionError: thousands of nested arrays
            raise DataError(f"{where} of {self.path} is not valid JSON ({err}); check the file format") from None
        _refuse_repeated_columns(
            self.repeated & self.columns, self.path, f"an object on {where}" if line else "an object"
        )
        return value

    def rows(self, lines: list[tuple[int, str]]) -> list[dict]:
        """The objects of JSONL ``lines`` (number, text), parsed as one array (3x faster than line by line); line
        by line when that fails, so that the error names the line."""
        if lines and lines[0][0] == 1:
            lines[0] = (1, lines[0][1].lstrip("\ufeff"))
        self.repeated.clear()
        try:
            rows = self.decoder.decode("[" + ",".join(text for _, text in lines) + "]")
        except (ValueError, RecursionError):
            rows = None
        if rows is None or len(rows) != len(lines) or self.repeated & self.columns or not _all_dicts(rows):
            rows = [self._row(text, number) for number, text in lines]
        return rows

    def _row(self, text: str, number: int) -> dict:
        row = self.loads(text, number)
        if not isinstance(row, dict):
            raise DataError(
                f"line {number} of {self.path} holds {_shown(row)}, not a JSON object; every line of a JSONL file "
                'must be one object such as {"text": "...", "label": "..."}'
            )
        return row


def _all_dicts(values: list) -> bool:
    return set(map(type, values)) <= {dict}


def _read_jsonl(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    reader = _JsonReader(path, columns)
    with _open_text(path, encoding) as handle:
        lines = ((number, line) for number, line in enumerate(handle, 1) if line.strip())
        while batch := list(itertools.islice(lines, chunk_size)):
            yield pd.DataFrame(reader.rows(batch), dtype=object)
            if chunk_size is None:
                return
    if chunk_size is None:  # no line at all
        yield pd.DataFrame()


def _read_json(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    with _open_text(path, encoding) as handle:
        value = _JsonReader(path, columns).loads(handle.read())
    records = isinstance(value, list) and _all_dicts(value)
    # pandas' own orient: {"text": {"0": "good film", ...}, "label": {...}}, or an object of lists
    by_column = isinstance(value, dict) and all(isinstance(cells, (dict, list)) for cells in value.values())
    if not (records or by_column):
        raise DataError(
            f"{path} holds {_shown(value)}; a JSON data file must hold an array of objects, one per row, such as "
            '[{"text": "...", "label": "..."}], or an object of columns'
        )
    yield pd.DataFrame(value, dtype=object)


def _read_parquet(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        if chunk_size is None:
            yield file.read().to_pandas()
        else:
            for batch in file.iter_batches(batch_size=chunk_size):
                yield batch.to_pandas()
    except pa.ArrowException as err:  # ArrowInvalid, unsupported types, ...
        raise DataError(f"could not read {path} as Parquet: {err}; check the file format") from None


def _read_txt(path: Path, *, sep: str, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    # Headerless "text<sep>label" lines (the emotion dataset's native format). Split at the last separator so texts
    # may contain it; prediction input (one column) takes the whole line.
    rows: list[list[str]] = []
    with _open_text(path, encoding, newline="") as handle:
        for number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if len(columns) == 1:
                rows.append([line])
            else:
                parts = line.rsplit(sep, 1)
                if len(parts) != 2:
                    raise DataError(
                        f"line {number} of {path} has no separator {sep!r}: {line[:60]!r}; every line "
                        "must be text<sep>label"
                    )
                rows.append(parts)
            if chunk_size is not None and len(rows) >= chunk_size:
                yield pd.DataFrame(rows, columns=columns)
                rows = []
    if rows or chunk_size is None:
        yield pd.DataFrame(rows, columns=columns)


_READERS = {
    "csv": _read_csv,
    "tsv": _read_tsv,
    "jsonl": _read_jsonl,
    "json": _read_json,
    "parquet": _read_parquet,
    "txt": _read_txt,
}


def _read_saved_dataset(path: Path, split: str | None, chunk_size: int | None) -> Iterator[pd.DataFrame]:
    # A datasets save_to_disk folder: state.json lists Arrow stream files; a DatasetDict has one such folder per
    # split and a dataset_dict.json. Read with pyarrow so the datasets library is not required.
    import pyarrow as pa

    try:
        if (path / "dataset_dict.json").exists():
            splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
            chosen = split or "train"
            if chosen not in splits:
                raise DataError(
                    f"{path} holds splits {sorted(splits)} but not {chosen!r}; pass --split with one of them"
                )
            path = path / chosen
        state_file = path / "state.json"
        if not state_file.exists():
            raise DataError(
                f"{path} is a folder but not a saved Hugging Face dataset (no state.json); give a data file "
                "or a folder written by datasets' save_to_disk"
            )
        for entry in json.loads(state_file.read_text())["_data_files"]:
            with pa.memory_map(str(path / entry["filename"])) as source:
                table = pa.ipc.open_stream(source).read_all()
            if chunk_size is None:
                yield table.to_pandas()
            else:
                for batch in table.to_batches(max_chunksize=chunk_size):
                    yield batch.to_pandas()
    except (KeyError, TypeError, pa.ArrowException) as err:  # a state.json or Arrow file of another shape
        raise DataError(
            f"could not read {path} as a saved dataset ({type(err).__name__}: {err}); save it again with "
            "datasets' save_to_disk"
        ) from None


def _require_columns(frame: pd.DataFrame, expected: list[str], path: Path) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        found = sorted(str(c) for c in frame.columns)
        raise DataError(
            f"expected columns {sorted(expected)} in {path} but found {found}; pass --text-column/--label-column "
            "to name the right ones"
        )


def _refuse_repeated_columns(repeated: Collection[str], path: Path, where: str) -> None:
    if repeated:
        raise DataError(
            f"{path} names the column(s) {sorted(set(repeated))} more than once in {where}, so which one holds the "
            "data is ambiguous; rename or remove the repeated column(s)"
        )


class _BadCell(Exception):
    """A cell that is neither a text nor a label: what it holds and, where it is particular, the fix."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        super().__init__(what)
        self.what, self.fix = what, fix


_SURROGATE = re.compile("[\ud800-\udfff]")


def _column_cells(values: list, column: str, path: Path, *, texts: bool, first_row: int = 1) -> list:
    # Texts: strings or None (missing). Labels: strings, tuples of strings (list cells) or None.
    kinds = set(map(type, values))  # the common cases at C speed: every CSV cell, JSON integer labels
    if kinds <= {str} and _valid_unicode(values):
        return values
    if kinds == {int}:
        return list(map(str, values))
    convert = _text_cell if texts else _label_cell
    cells = []
    for row, value in enumerate(values, first_row):
        try:
            cells.append(convert(value))
        except _BadCell as bad:
            default_fix = (
                "texts must be strings, so point --text-column at the column of texts or convert its cells to strings"
                if texts
                else "labels must be strings, numbers, booleans or lists of them, so point --label-column at the "
                "column of labels or convert its cells"
            )
            raise DataError(
                f"data row {row} of {path}: column {column!r} holds {bad.what}: {_shown(value)}; "
                f"{bad.fix or default_fix}"
            ) from None
    return cells


def _valid_unicode(strings: list[str]) -> bool:
    return all(map(str.isascii, strings)) or not any(map(_SURROGATE.search, strings))


def _text_cell(value) -> str | None:
    if _is_label_collection(value):
        raise _BadCell("a list")
    if isinstance(value, (bool, np.bool_)):
        raise _BadCell("a boolean")
    return _scalar(value)


def _label_cell(value) -> str | tuple[str, ...] | None:
    if _is_label_collection(value):  # a list cell (JSON array, Parquet/Arrow list): its items as strings
        return tuple(item for item in map(_label_name, value) if item is not None)
    return _label_name(value)


def _label_name(value) -> str | None:
    if _is_label_collection(value):
        raise _BadCell("a list inside a list of labels")
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    return _scalar(value)


def _scalar(value) -> str | None:
    if isinstance(value, str):
        if not value.isascii() and (surrogate := _SURROGATE.search(value)):
            raise _BadCell(
                f"a lone UTF-16 surrogate U+{ord(surrogate.group()):04X}, which is not valid Unicode (a broken "
                "\\u escape of a JSON file?)",
                "fix or remove that character",
            )
        return value if type(value) is str else str(value)
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return _scalar(bytes(value).decode("utf-8"))
        except UnicodeDecodeError as err:
            raise _BadCell(
                f"bytes that are not valid UTF-8 ({err.reason} at byte {err.start})", "store that column as UTF-8 text"
            ) from None
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else str(value)
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    raise _BadCell("a mapping (JSON object)" if isinstance(value, Mapping) else f"a {type(value).__name__}")


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _preview(rows: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in rows[:limit])
    return shown + (f", ... ({len(rows) - limit} more)" if len(rows) > limit else "")
