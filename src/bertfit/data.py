"""Reading labelled text from files, label mapping, stratified splits and length statistics.

Supported inputs: CSV, TSV, JSONL, JSON, Parquet (text formats may be gzipped), headerless ``text<sep>label`` text
files (``.txt`` with an explicit ``sep``), and a folder written by ``datasets.Dataset(Dict).save_to_disk``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .exceptions import DataError

__all__ = [
    "TextDataset",
    "load_data",
    "read_columns",
    "iter_text_chunks",
    "sorted_labels",
    "train_val_split",
    "check_validation",
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
    """Texts with one label name each, in file order.

    Args:
        texts: The input texts.
        labels: One label name per text (labels are always strings; integer labels become "0", "1", ...).
        source: Where the data came from, for messages.

    >>> ds = TextDataset(["good film", "bad film"], ["pos", "neg"])
    >>> len(ds), ds.classes
    (2, ['neg', 'pos'])
    """

    texts: list[str]
    labels: list[str]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DataError(
                f"got {len(self.texts)} texts but {len(self.labels)} labels from {self.source}"
                "; pass one label per text"
            )

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def classes(self) -> list[str]:
        """The sorted distinct labels."""
        return sorted_labels(self.labels)

    def label_counts(self) -> dict[str, int]:
        """Rows per label, in sorted label order."""
        counts = Counter(self.labels)
        return {label: counts[label] for label in self.classes}

    def fingerprint(self) -> str:
        """A short sha256 of the texts and labels, to tell datasets apart."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels):
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x1f" + label.encode() + b"\x1e")
        return digest.hexdigest()[:16]

    def subset(self, indices: Sequence[int]) -> TextDataset:
        """The rows at ``indices``, in that order."""
        return TextDataset([self.texts[i] for i in indices], [self.labels[i] for i in indices], self.source)


def sorted_labels(labels: Sequence[str]) -> list[str]:
    """Distinct labels sorted numerically when they are all integers ("2" before "10"), else alphabetically."""
    distinct = set(labels)
    if all(_is_int(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def load_data(
    path: str | Path,
    text_column: str = "text",
    label_column: str = "label",
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    split: str | None = None,
) -> TextDataset:
    """Read a labelled text file into a :class:`TextDataset`.

    Rows with an empty or missing text are dropped with a warning; a row without a label is an error.

    Args:
        path: A CSV/TSV/JSONL/JSON/Parquet file (text formats may be gzipped), a ``.txt`` file of headerless
            ``text<sep>label`` lines, or a ``save_to_disk`` folder of the ``datasets`` library.
        text_column: Column holding the texts.
        label_column: Column holding the labels (strings or integers).
        sep: Field separator; overrides the one implied by the file suffix. Required for ``.txt`` files.
        encoding: Text encoding of the file.
        split: Split to read from a saved ``DatasetDict`` folder (default ``train``).

    Returns:
        The dataset, labels as strings.

    Raises:
        DataError: The file is missing, empty, in an unknown format, undecodable, lacks a column, or has
            rows without labels or no usable text at all.

    >>> ds = load_data("examples/sms_spam.csv")  # doctest: +SKIP
    """
    path = Path(path)
    columns = read_columns(path, [text_column, label_column], sep=sep, encoding=encoding, split=split)
    texts, labels = columns[text_column], columns[label_column]
    missing = [i + 1 for i, label in enumerate(labels) if label is None or label.strip() == ""]
    if missing:
        raise DataError(
            f"{len(missing)} row(s) of {path} have no value in label column {label_column!r} "
            f"(data rows {_preview(missing)}); fill in or remove those rows"
        )
    keep = [i for i, text in enumerate(texts) if text is not None and text.strip() != ""]
    if not keep:
        raise DataError(f"every row of {path} has an empty text in column {text_column!r}; check --text-column")
    if len(keep) < len(texts):
        logger.warning(
            "dropped %d of %d rows of %s with an empty or missing text", len(texts) - len(keep), len(texts), path
        )
    return TextDataset([texts[i] for i in keep], [labels[i].strip() for i in keep], str(path))


def read_columns(
    path: str | Path, columns: list[str], *, sep: str | None = None, encoding: str = "utf-8", split: str | None = None
) -> dict[str, list[str | None]]:
    """The named columns of a data file, each a list of strings in file order (None where a cell is missing).

    Unlike :func:`load_data` nothing is dropped or checked beyond the columns' presence: explore counts what is
    missing.

    Raises:
        DataError: The file is missing, empty, in an unknown format, undecodable, or lacks a column.
    """
    path = Path(path)
    chunks = _read_chunks(path, sep=sep, encoding=encoding, split=split, chunk_size=None, columns=columns)
    frame = pd.concat(list(chunks), ignore_index=True)
    if frame.empty:
        raise DataError(f"{path} has no data rows; give a file with at least one labelled text per class")
    _require_columns(frame, columns, path)
    return {column: [_cell_to_str(v) for v in frame[column].tolist()] for column in columns}


def iter_text_chunks(
    path: str | Path,
    text_column: str = "text",
    *,
    sep: str | None = None,
    encoding: str = "utf-8",
    chunk_size: int = 10_000,
) -> Iterator[list[str]]:
    """Stream the texts of a file in chunks of at most ``chunk_size``, in file order, for prediction.

    Missing texts come back as empty strings so that every input row gets an output row.

    Raises:
        DataError: As :func:`load_data`.
    """
    path = Path(path)
    for frame in _read_chunks(
        path, sep=sep, encoding=encoding, split=None, chunk_size=chunk_size, columns=[text_column]
    ):
        _require_columns(frame, [text_column], path)
        yield [_cell_to_str(v) or "" for v in frame[text_column].tolist()]


def train_val_split(dataset: TextDataset, val_size: float = 0.1, seed: int = 42) -> tuple[TextDataset, TextDataset]:
    """Split ``dataset`` into train and validation parts, stratified by label.

    Args:
        dataset: The labelled data.
        val_size: Share of rows (0 < val_size < 1) that go to validation.
        seed: Random seed of the shuffle.

    Returns:
        ``(train, validation)``.

    Raises:
        DataError: A class has too few rows to appear on both sides of the split.
    """
    from sklearn.model_selection import train_test_split

    counts = dataset.label_counts()
    n_val = math.ceil(len(dataset) * val_size)
    small = {label: n for label, n in counts.items() if n < 2}
    if small:
        raise DataError(
            f"cannot make a stratified split: class(es) {sorted(small)} of {dataset.source} have a single row; "
            "add more examples of those classes, remove them, or pass a --validation file"
        )
    if n_val < len(counts) or len(dataset) - n_val < len(counts):
        raise DataError(
            f"cannot make a stratified split of {len(dataset)} rows into {len(counts)} classes with "
            f"val_size={val_size}: each side needs at least one row per class; change --val-size or pass --validation"
        )
    indices = np.arange(len(dataset))
    train_idx, val_idx = train_test_split(indices, test_size=n_val, random_state=seed, stratify=dataset.labels)
    return dataset.subset(sorted(train_idx)), dataset.subset(sorted(val_idx))


def check_validation(train: TextDataset, validation: TextDataset) -> None:
    """Refuse validation labels unseen in train; warn on texts that are in both.

    Raises:
        DataError: The validation data has labels the training data lacks.
    """
    unseen = sorted(set(validation.labels) - set(train.labels))
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
        yield from _read_saved_dataset(path, split, chunk_size)
        return
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty; give a file with a header and labelled rows")
    kind = _format_of(path, sep)
    try:
        yield from _READERS[kind](path, sep=sep, encoding=encoding, chunk_size=chunk_size, columns=columns)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not valid {encoding} text ({err.reason} at byte {err.start}); pass the file's encoding, "
            "e.g. --encoding latin-1"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {path} is empty; give a file with a header and labelled rows") from None
    except (pd.errors.ParserError, ValueError, OSError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"could not read {path} as {kind.upper()}: {str(err).strip()}; check the file format"
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


def _read_delimited(path: Path, *, sep: str | None, encoding: str, chunk_size: int | None, columns, default: str):
    reader = pd.read_csv(
        path,
        sep=sep or default,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        encoding=encoding,
        chunksize=chunk_size,
        engine="c",
    )
    yield from ([reader] if chunk_size is None else reader)


def _read_csv(path: Path, **kw) -> Iterator[pd.DataFrame]:
    yield from _read_delimited(path, default=",", **kw)


def _read_tsv(path: Path, **kw) -> Iterator[pd.DataFrame]:
    yield from _read_delimited(path, default="\t", **kw)


def _read_jsonl(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    reader = pd.read_json(path, lines=True, dtype=False, encoding=encoding, chunksize=chunk_size)
    yield from ([reader] if chunk_size is None else reader)


def _read_json(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    yield pd.read_json(path, dtype=False, encoding=encoding)


def _read_parquet(path: Path, *, sep, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid (a ValueError) or OSError subclasses
        raise DataError(f"could not read {path} as Parquet: {err}; check the file format") from None
    if chunk_size is None:
        yield file.read().to_pandas()
    else:
        for batch in file.iter_batches(batch_size=chunk_size):
            yield batch.to_pandas()


def _read_txt(path: Path, *, sep: str, encoding: str, chunk_size: int | None, columns) -> Iterator[pd.DataFrame]:
    # Headerless "text<sep>label" lines (the emotion dataset's native format). Split at the last separator so texts
    # may contain it; prediction input (one column) takes the whole line.
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    rows: list[list[str]] = []
    with opener(path, "rt", encoding=encoding, newline="") as handle:
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

    if (path / "dataset_dict.json").exists():
        splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
        chosen = split or "train"
        if chosen not in splits:
            raise DataError(f"{path} holds splits {sorted(splits)} but not {chosen!r}; pass --split with one of them")
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


def _require_columns(frame: pd.DataFrame, expected: list[str], path: Path) -> None:
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        found = sorted(str(c) for c in frame.columns)
        raise DataError(
            f"expected columns {sorted(expected)} in {path} but found {found}; pass --text-column/--label-column "
            "to name the right ones"
        )


def _cell_to_str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _preview(numbers: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f", ... ({len(numbers) - limit} more)" if len(numbers) > limit else "")
