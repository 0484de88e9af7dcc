from __future__ import annotations

import gzip
import json
import logging
import re

import pandas as pd
import pytest
from conftest import write_csv

from bertfit import DataError, TextDataset, load_data
from bertfit.data import check_validation, iter_text_chunks, sorted_labels, train_val_split

ROWS = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos")]


def _expected(ds: TextDataset) -> None:
    assert ds.texts == ["good film", "bad film", "great plot"]
    assert ds.labels == ["pos", "neg", "pos"]


def test_reads_csv_tsv_jsonl_json_parquet_and_gzip(tmp_path):
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    frame.to_csv(tmp_path / "d.csv.gz", index=False, compression="gzip")
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_json(tmp_path / "d.json", orient="records")
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ["d.csv", "d.tsv", "d.csv.gz", "d.jsonl", "d.json", "d.parquet"]:
        _expected(load_data(tmp_path / name))


def test_reads_txt_lines_with_explicit_separator(tmp_path):
    # The emotion dataset's native format: "text;label", no header; a ';' inside the text is kept.
    path = tmp_path / "train.txt"
    path.write_text("good film;pos\nbad film;neg\ngreat plot;pos\n")
    _expected(load_data(path, sep=";"))
    gz = tmp_path / "train.txt.gz"
    gz.write_bytes(gzip.compress(b"a; b;neg\n"))
    assert load_data(gz, sep=";").texts == ["a; b"]


def test_txt_without_separator_asks_for_sep(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("good film;pos\n")
    with pytest.raises(DataError, match="--sep"):
        load_data(path)


def test_reads_saved_hf_dataset_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": [t for t, _ in ROWS], "label": [lab for _, lab in ROWS]})
    ds.save_to_disk(tmp_path / "single")
    _expected(load_data(tmp_path / "single"))
    datasets.DatasetDict({"train": ds, "validation": ds.select([1])}).save_to_disk(tmp_path / "dict")
    _expected(load_data(tmp_path / "dict"))
    assert load_data(tmp_path / "dict", split="validation").labels == ["neg"]
    with pytest.raises(DataError, match=r"splits \['train', 'validation'\] but not 'test'"):
        load_data(tmp_path / "dict", split="test")


def test_integer_labels_become_names_sorted_numerically(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("a", 10), ("b", 2), ("c", 1)])
    ds = load_data(path)
    assert ds.labels == ["10", "2", "1"]
    assert ds.classes == ["1", "2", "10"]
    assert sorted_labels(["b", "a", "B"]) == ["B", "a", "b"]


def test_jsonl_integer_labels_and_custom_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": t, "target": i}) for i, t in enumerate(["x", "y"])))
    ds = load_data(path, text_column="body", label_column="target")
    assert ds.labels == ["0", "1"]


def test_missing_columns_lists_found_columns(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("x", "y")], header=("body", "target"))
    with pytest.raises(
        DataError,
        match=r"expected columns \['label', 'text'\] .* found \['body', 'target'\]; "
        r"pass --text-column/--label-column",
    ):
        load_data(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "is empty"), (b"text,label\n", "no data rows"), (b"text,label\n\xff\xfe bad,pos\n", "--encoding")],
)
def test_unusable_files(tmp_path, content, match):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_data(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(tmp_path / "nope.csv")
    (tmp_path / "d.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"unknown format .*\.xlsx.*use one of"):
        load_data(tmp_path / "d.xlsx")


def test_encoding_option_reads_latin1(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncafé,pos\n".encode("latin-1"))
    assert load_data(path, encoding="latin-1").texts == ["café"]


@pytest.mark.parametrize(
    ("name", "write", "match"),
    [
        ("d.csv", lambda p, c: p.write_bytes(gzip.compress(c)), r"is gzip-compressed, not CSV .* \(d\.csv\.gz\)"),
        ("d.jsonl", lambda p, c: p.write_bytes(b"PK\x03\x04" + c), r"ZIP archive .*not JSONL .*save the sheet as CSV"),
        ("d.tsv", lambda p, c: p.write_bytes(b"PAR1" + c), r"is a Parquet file, not TSV .*\.parquet suffix"),
    ],
)
def test_misnamed_binary_file_is_named_for_what_it_is(tmp_path, name, write, match):
    path = tmp_path / name
    write(path, b"text,label\ngood,pos\nbad,neg\n")
    with pytest.raises(DataError, match=match):
        load_data(path)


def test_utf16_file_gets_the_utf16_hint_and_reads_with_it(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\ncafé,pos\nthé,neg\n", encoding="utf-16")
    with pytest.raises(DataError, match=r"not valid utf-8 .*--encoding utf-16 \(the file starts with a UTF-16"):
        load_data(path)
    assert load_data(path, encoding="utf-16").texts == ["café", "thé"]


def test_empty_texts_are_dropped_with_a_count(tmp_path, caplog):
    path = write_csv(tmp_path / "d.csv", [("good", "pos"), ("", "neg"), ("   ", "pos"), ("bad", "neg")])
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        ds = load_data(path)
    assert ds.texts == ["good", "bad"]
    assert "dropped 2 of 4 rows" in caplog.text


def test_all_texts_empty_is_an_error(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("", "pos"), ("", "neg")])
    with pytest.raises(DataError, match="every row .* empty text"):
        load_data(path)


def test_missing_labels_name_the_rows(tmp_path):
    path = write_csv(tmp_path / "d.csv", [("a", "pos"), ("b", ""), ("c", "neg"), ("d", " ")])
    with pytest.raises(DataError, match=r"2 row\(s\) .* no value in label column 'label' \(data rows 2, 4\)"):
        load_data(path)


def test_stratified_split_keeps_class_shares():
    ds = TextDataset([f"t{i}" for i in range(100)], ["a"] * 80 + ["b"] * 20)
    train, val = train_val_split(ds, 0.2, seed=1)
    assert (len(train), len(val)) == (80, 20)
    assert val.label_counts() == {"a": 16, "b": 4}
    assert set(train.texts).isdisjoint(val.texts)
    assert train_val_split(ds, 0.2, seed=1)[1].texts == val.texts  # same seed, same split


def test_split_refuses_classes_too_small():
    ds = TextDataset(["a", "b", "c", "d"], ["x", "x", "x", "y"])
    with pytest.raises(DataError, match=r"class\(es\) \['y'\] .* single row"):
        train_val_split(ds, 0.5)
    many = TextDataset([str(i) for i in range(12)], [str(i % 6) for i in range(12)])
    with pytest.raises(DataError, match="at least one row per class"):
        train_val_split(many, 0.1)


def test_a_label_column_of_texts_is_pointed_out():
    # Labels and texts swapped: one label per row cannot be split, and the message says which options to check.
    ds = TextDataset(["pos", "neg"] * 20, [f"text number {i}" for i in range(40)])
    with pytest.raises(DataError, match=r"and 30 more of .*40 distinct labels in 40 rows: check --text-column"):
        train_val_split(ds, 0.2)


def test_labels_joining_other_labels_suggest_label_sep(tmp_path, caplog):
    rows = [("a", "joy"), ("b", "love"), ("c", "joy;love"), ("d", "Hello, world"), ("e", "world")]
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        ds = load_data(write_csv(tmp_path / "d.csv", rows))
    assert ds.classes == ["Hello, world", "joy", "joy;love", "love", "world"]  # read as given: a warning only
    assert "1 label(s) of" in caplog.text and "with ';' (e.g. 'joy;love')" in caplog.text
    assert "--label-sep ';'" in caplog.text and "','" not in caplog.text  # 'Hello' is no label: no hint for ','


def test_text_and_label_column_must_differ(tmp_path):
    path = write_csv(tmp_path / "d.csv", ROWS)
    with pytest.raises(DataError, match="text_column and label_column are both 'text'"):
        load_data(path, text_column="text", label_column="text")


def test_validation_labels_must_occur_in_train(caplog):
    train = TextDataset(["a", "b", "c"], ["x", "y", "x"])
    with pytest.raises(DataError, match=r"validation labels \['w', 'z'\] do not occur"):
        check_validation(train, TextDataset(["d", "e"], ["z", "w"]))
    with caplog.at_level(logging.WARNING, logger="bertfit"):
        check_validation(train, TextDataset(["a", "a", "q"], ["x", "x", "y"]))
    assert "2 of 3 validation texts (1 distinct) also occur in the training data" in caplog.text


def test_iter_text_chunks_streams_in_order(tmp_path):
    path = write_csv(tmp_path / "d.csv", [(f"text {i}", "x") for i in range(25)])
    chunks = list(iter_text_chunks(path, chunk_size=10))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert sum(chunks, []) == [f"text {i}" for i in range(25)]


def test_fingerprint_tracks_content():
    a = TextDataset(["x", "y"], ["1", "2"])
    assert a.fingerprint() == TextDataset(["x", "y"], ["1", "2"]).fingerprint()
    assert a.fingerprint() != TextDataset(["x", "y"], ["2", "1"]).fingerprint()


# -- repeated column names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", "text,text,label\na,b,pos\n"),
        ("d.tsv", "text\tlabel\tlabel\na\tpos\tneg\n"),
        ("d.jsonl", '{"text": "a", "label": "pos"}\n{"text": "a", "text": "b", "label": "pos"}\n'),
        ("d.json", '[{"text": "a", "label": "pos", "label": "neg"}]'),
    ],
)
def test_repeated_column_names_are_refused(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} names the column\(s\) \['(text|label)'\] more than"):
        load_data(path)


def test_repeated_names_in_parquet_and_unused_repeated_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        [pa.array(["a", "b"]), pa.array(["c", "d"]), pa.array(["x", "y"])], names=["text", "text", "label"]
    )
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"names the column\(s\) \['text'\] more than once in its columns"):
        load_data(tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("text,label,note,note\na,pos,1,2\n")
    assert load_data(tmp_path / "d.csv").texts == ["a"]  # the repeated column is not read


def test_header_names_are_kept_as_written(tmp_path):
    # pandas names an empty header cell "Unnamed: 0" and renames a repeat "text.1": the file's names are used.
    (tmp_path / "d.csv").write_text(",label,text.1\na,pos,b\n")
    assert load_data(tmp_path / "d.csv", text_column="").texts == ["a"]
    assert load_data(tmp_path / "d.csv", text_column="text.1").texts == ["b"]


def test_a_row_with_an_extra_field_is_an_error_not_a_shifted_text(tmp_path):
    # pandas takes a first data row with one field more than the header as an index: the text would lose "hello".
    (tmp_path / "d.csv").write_text("text,label\nhello, world,pos\ngood,neg\n")
    with pytest.raises(DataError, match=r"Expected 2 fields in line 2, saw 3; quote the fields"):
        load_data(tmp_path / "d.csv")


# -- cells that are not strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "what"),
    [
        (["a", "b"], r"a list: \['a', 'b'\]"),
        ({"a": 1}, r"a mapping \(JSON object\): \{'a': 1\}"),
        (True, "a boolean: True"),
    ],
)
def test_texts_that_are_not_strings_name_the_column_row_and_fix(tmp_path, cell, what):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"text": "fine", "label": "x"}) + "\n" + json.dumps({"text": cell, "label": "y"}) + "\n"
    )
    message = rf"data row 2 of .*d.jsonl: column 'text' holds {what}; texts must be strings, so point --text-column"
    with pytest.raises(DataError, match=message):
        load_data(path)
    with pytest.raises(DataError, match=message):
        list(iter_text_chunks(path, chunk_size=1))  # row numbers count across chunks


def test_numbers_become_texts_and_missing_texts_are_dropped(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": 5, "label": 1}\n{"text": 2.5, "label": true}\n{"text": null, "label": 0}\n')
    ds = load_data(path)
    assert (ds.texts, ds.labels) == (["5", "2.5"], ["1", "True"])


def test_bytes_are_decoded_as_utf8_or_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = pa.table({"text": pa.array([b"caf\xc3\xa9", b"ok"]), "label": pa.array([b"x", b"y"])})
    pq.write_table(good, tmp_path / "good.parquet")
    ds = load_data(tmp_path / "good.parquet")
    assert (ds.texts, ds.labels) == (["café", "ok"], ["x", "y"])
    pq.write_table(pa.table({"text": pa.array([b"ok", b"caf\xe9"]), "label": ["x", "y"]}), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"data row 2 of .*: column 'text' holds bytes that are not valid UTF-8"):
        load_data(tmp_path / "bad.parquet")


def test_list_texts_in_parquet_and_mapping_labels_are_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [["a"], ["b"]], "label": ["x", "y"]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match="data row 1 .* column 'text' holds a list"):
        load_data(tmp_path / "d.parquet")
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": {"name": "x"}}\n')
    with pytest.raises(DataError, match="column 'label' holds a mapping .*labels must be strings, numbers"):
        load_data(path)
    path.write_text('{"text": "a", "label": [["x"]]}\n')
    with pytest.raises(DataError, match="column 'label' holds a list inside a list of labels"):
        load_data(path)
    path.write_text('{"text": "a", "label": [true, "x", null]}\n')
    assert load_data(path).labels == [("True", "x")]


def test_lone_surrogates_are_refused(tmp_path):
    # json reads "\ud800" as a lone surrogate, which no tokenizer takes and UTF-8 cannot encode (fingerprint failed).
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y\\ud800"}\n')
    with pytest.raises(DataError, match=r"data row 2 .* column 'label' holds a lone UTF-16 surrogate U\+D800"):
        load_data(path)


# -- files that could not be read ----------------------------------------------------------------------------------


def test_unknown_encoding_is_a_data_error(sentiment_csv):
    for encoding in ["no-such-codec", "rot13"]:  # LookupError before
        with pytest.raises(DataError, match=rf"unknown text encoding '{encoding}'; pass a Python codec name"):
            load_data(sentiment_csv, encoding=encoding)


def test_broken_gzip_and_saved_dataset_are_data_errors(tmp_path):
    whole = gzip.compress(b"text,label\ngood,pos\nbad,neg\n")
    (tmp_path / "d.csv.gz").write_bytes(whole[: len(whole) // 2])  # EOFError before
    with pytest.raises(DataError, match=r"could not read .*d.csv.gz as CSV: Compressed file ended"):
        load_data(tmp_path / "d.csv.gz")
    (tmp_path / "d.jsonl.gz").write_bytes(whole[:12] + b"garbage")  # zlib.error before
    with pytest.raises(DataError, match="could not read .*d.jsonl.gz as JSONL"):
        load_data(tmp_path / "d.jsonl.gz")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "state.json").write_text("{}")  # KeyError before
    with pytest.raises(DataError, match=r"could not read .*saved as a saved dataset \(KeyError"):
        load_data(tmp_path / "saved")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "a"}\n{"text": \n', "line 2 of .* is not valid JSON"),
        ('["a", "b"]\n', r"line 1 of .* holds \['a', 'b'\], not a JSON object"),
    ],
)
def test_bad_jsonl_lines_are_named(tmp_path, content, match):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_data(path)


def test_json_files_of_records_or_columns(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"text": {"0": "good film", "1": "bad film"}, "label": {"0": "pos", "1": "neg"}}))
    assert load_data(path).texts == ["good film", "bad film"]  # pandas' default orient
    path.write_text('"text"')
    with pytest.raises(DataError, match="must hold an array of objects, one per row"):
        load_data(path)
    (tmp_path / "bom.jsonl").write_text('\ufeff{"text": "a", "label": "x"}\n', encoding="utf-8")
    assert load_data(tmp_path / "bom.jsonl").texts == ["a"]
