from __future__ import annotations

import gzip
import json
import logging

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
