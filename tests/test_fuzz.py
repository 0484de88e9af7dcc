"""Property-based fuzzing of the file readers and the config parser: every input gives a result or our own error.

Bounded to run in well under a minute: few examples per property, small inputs, a deadline per example. Each bug
these properties found has a plain regression test in test_data.py or test_config.py.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import json
import math
import os
import re
import tempfile
import typing
from pathlib import Path

import pyarrow.parquet  # noqa: F401  (imported before the first timed example reads a Parquet file)
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertfit import ConfigError, DataError, TrainConfig, load_data
from bertfit.data import iter_text_chunks

FUZZ = settings(
    max_examples=int(os.environ.get("BERTFIT_FUZZ_EXAMPLES", "200")),  # e.g. 5000 for a long search
    deadline=2000,  # ms per example; a first example also imports pandas/pyarrow code paths
    database=None,  # no .hypothesis folder in the repository
    suppress_health_check=[HealthCheck.too_slow],
)
SURROGATE = re.compile("[\ud800-\udfff]")
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252", "utf-7"]
ODD_ENCODINGS = [*ENCODINGS, "ascii", "idna", "punycode", "unicode_escape", "undefined", "rot13", "base64", "nope", ""]


def _usable(dataset) -> None:
    """What a returned dataset must satisfy for training: string texts and labels, valid Unicode, a fingerprint."""
    assert len(dataset) > 0
    assert all(isinstance(text, str) and text.strip() and not SURROGATE.search(text) for text in dataset.texts)
    labels = [label for row in dataset.labels for label in row] if dataset.multi_label else dataset.labels
    assert all(isinstance(label, str) and not SURROGATE.search(label) for label in labels)
    dataset.fingerprint()


def _load(path: Path, **kwargs):
    try:
        dataset = load_data(path, **kwargs)
    except DataError:
        return None
    _usable(dataset)
    return dataset


# -- data files ------------------------------------------------------------------------------------------------------

# Column names and cells of any printable or control character, surrogates excepted (no encoder writes them).
chars = st.characters(blacklist_categories=("Cs",))
names = st.text(chars, max_size=6)
cells = st.text(chars, max_size=12)
labels = st.one_of(st.sampled_from(["pos", "neg", " 1", "0 ", "a b"]), cells)


@st.composite
def delimited(draw):
    """A CSV/TSV written by the csv module: header, rows of (text, label), a separator and an encoding."""
    text_column, label_column = draw(names), draw(names)
    rows = draw(st.lists(st.tuples(cells, labels), min_size=1, max_size=6))
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))
    encoding = draw(st.sampled_from(ENCODINGS))
    buffer = io.StringIO()
    # csv quotes a field holding a character of its line terminator; with "\n" alone a bare "\r" would end a row.
    terminator = draw(st.sampled_from(["\n", "\r\n"]))
    quoting = csv.QUOTE_ALL if terminator == "\n" else draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(buffer, delimiter=sep, lineterminator=terminator, quoting=quoting)
    writer.writerow([text_column, label_column])
    writer.writerows(rows)
    return buffer.getvalue(), sep, encoding, text_column, label_column, rows


@given(case=delimited())
@FUZZ
def test_delimited_files_round_trip_or_raise_data_error(case):
    content, sep, encoding, text_column, label_column, rows = case
    try:
        data = content.encode(encoding)
    except UnicodeEncodeError:
        data = content.encode("utf-8")
        encoding = "utf-8"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("d.tsv" if sep == "\t" else "d.csv")
        path.write_bytes(data)
        dataset = _load(path, text_column=text_column, label_column=label_column, sep=sep, encoding=encoding)
    kept = [(text, label.strip()) for text, label in rows if text.strip()]
    well_formed = text_column != label_column and all(label.strip() for _, label in rows) and kept
    if dataset is None:
        # The csv module's output, read back in its own encoding, is refused only when ambiguous: a file starting
        # with U+FEFF is read as one with a byte order mark.
        assert not well_formed or text_column.startswith("\ufeff")
    else:
        assert list(zip(dataset.texts, dataset.labels)) == kept or text_column == label_column


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3), max_leaves=6
)
keys = st.one_of(st.sampled_from(["text", "label"]), names)
records = st.lists(st.dictionaries(keys, json_values, max_size=4), max_size=5)
# pandas' orient of a JSON file: an object of columns, each an object of row index to value or a list of values
by_column = st.dictionaries(keys, st.lists(json_values, max_size=4) | st.dictionaries(names, json_values, max_size=4))


@given(
    rows=records,
    columns=st.none() | by_column,
    lines=st.booleans(),
    ascii_only=st.booleans(),
    encoding=st.sampled_from(ENCODINGS),
)
@FUZZ
def test_json_and_jsonl_files_give_a_dataset_or_data_error(rows, columns, lines, ascii_only, encoding):
    if columns is not None and not lines:
        rows = []  # the texts are not checked against the rows

    def dump(ascii_only: bool) -> str:
        if lines:
            return "".join(json.dumps(row, ensure_ascii=ascii_only) + "\n" for row in rows)
        return json.dumps(rows if columns is None else columns, ensure_ascii=ascii_only)

    try:
        data = dump(ascii_only).encode(encoding)
    except UnicodeEncodeError:  # a character latin-1 or cp1252 lacks: write \u escapes
        data, encoding = dump(True).encode("utf-8"), "utf-8"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("d.jsonl" if lines else "d.json")
        path.write_bytes(data)
        dataset = _load(path, encoding=encoding)
    if dataset is not None:  # every text is a row's text cell: a string as it is, or a number's digits
        strings = [row["text"] for row in rows if isinstance(row.get("text"), str) and row["text"].strip()]
        assert set(strings) <= set(dataset.texts)
        assert not any(text.startswith(("[", "{")) and text not in strings for text in dataset.texts)


suffixes = st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet", ".csv.gz", ".jsonl.gz", ".json.gz", ".txt"])
contents = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=120).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from([b"text", b"label", b",", b"\t", b"\n", b'"', b"{", b"}", b":", b"[", b"]", b"\\u"])).map(
        b"".join
    ),
)


def _gzipped(content: bytes, how: str) -> bytes:
    whole = gzip.compress(content)
    return {"raw": content, "whole": whole, "truncated": whole[: len(whole) // 2], "corrupt": whole[:12] + content}[
        how
    ]


@given(
    content=contents,
    suffix=suffixes,
    gzip_as=st.sampled_from(["raw", "whole", "truncated", "corrupt"]),
    encoding=st.sampled_from(ODD_ENCODINGS),
    column=names,
)
@FUZZ
def test_random_bytes_give_a_dataset_or_data_error(content, suffix, gzip_as, encoding, column):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"d{suffix}"
        path.write_bytes(_gzipped(content, gzip_as) if suffix.endswith(".gz") else content)
        sep = ";" if suffix == ".txt" else None
        _load(path, sep=sep, encoding=encoding)
        _load(path, text_column=column or "text", sep=sep, encoding=encoding)
        try:
            chunks = list(iter_text_chunks(path, sep=sep, encoding=encoding, chunk_size=2))
        except DataError:
            return
        assert all(isinstance(text, str) and not SURROGATE.search(text) for chunk in chunks for text in chunk)


# -- configs ---------------------------------------------------------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]
TYPES = typing.get_type_hints(TrainConfig)
config_values = st.one_of(
    json_values,
    st.sampled_from(
        ["true", "False", "yes", "no", "1", "0", "42", " 7 ", "8.5", "1e-4", "none", "null", "nan", "inf"]
    ),
    st.sampled_from(["", "balanced", '{"a": 2}', "chunk", "truncate", "steps", "fp32", "precision>=0.9", "mlflow"]),
    st.integers(min_value=-3, max_value=300),
    st.floats(min_value=-1, max_value=2),
)
config_keys = st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS).map(lambda key: key.replace("_", "-")), names)
config_dicts = st.dictionaries(config_keys, config_values, max_size=4)


def _typed(config: TrainConfig) -> None:
    """Every value of a built config has its field's declared type, and the config survives a round trip."""
    for name in FIELDS:
        value, declared = getattr(config, name), TYPES[name]
        kinds = typing.get_args(declared) or (declared,)
        kinds = tuple(typing.get_origin(kind) or kind for kind in kinds)
        if float in kinds and type(value) is int:  # an integral float is kept as an int (epochs: 2)
            continue
        assert isinstance(value, kinds), (name, value)
        assert not isinstance(value, bool) or bool in kinds, (name, value)
    assert TrainConfig.from_dict(config.to_dict()) == config


def _build(make):
    try:
        config = make()
    except ConfigError:
        return
    _typed(config)


@given(values=config_dicts)
@FUZZ
def test_from_dict_gives_a_typed_config_or_config_error(values):
    _build(lambda: TrainConfig.from_dict(values))


@given(values=st.dictionaries(st.sampled_from(FIELDS), config_values, max_size=4))
@FUZZ
def test_direct_construction_gives_a_typed_config_or_config_error(values):
    _build(lambda: TrainConfig(**values))


def _toml(values: dict) -> str:
    def literal(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return (
                "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
            )
        if isinstance(value, list):
            return "[" + ", ".join(literal(item) for item in value) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {literal(v)}" for k, v in value.items()) + "}"
        return json.dumps(value)  # strings; ints

    return "".join(f"{json.dumps(key)} = {literal(value)}\n" for key, value in values.items() if value is not None)


serializers = {".json": json.dumps, ".yaml": yaml.safe_dump, ".toml": _toml}


@given(
    values=config_dicts,
    suffix=st.sampled_from(sorted(serializers)),
    garbage=st.one_of(st.none(), st.text(max_size=40), st.binary(max_size=40)),
)
@FUZZ
def test_config_files_give_a_typed_config_or_config_error(values, suffix, garbage):
    if garbage is None:
        try:
            text = serializers[suffix](values)
        except (ValueError, TypeError):  # TOML has no null inside a list; YAML has no surrogates
            return
        content = text.encode("utf-8", "surrogatepass")
    else:
        content = garbage if isinstance(garbage, bytes) else garbage.encode("utf-8", "surrogatepass")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"c{suffix}"
        path.write_bytes(content)
        _build(lambda: TrainConfig.from_file(path))


@pytest.mark.parametrize("name", FIELDS)
def test_every_field_has_a_parser(name):
    # A field whose type the parser does not know would pass through unparsed: teach config._PARSERS that type.
    from bertfit.config import _field_types

    assert _field_types(TrainConfig)[name][1] is not None or name == "class_weights", f"no parser for {name}'s type"
