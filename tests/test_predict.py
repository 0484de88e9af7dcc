"""File prediction streams in chunks, sorts each chunk by length, and still writes rows in input order."""

from __future__ import annotations

import csv
import io
import json
import sys
from types import SimpleNamespace

import pytest
from conftest import write_csv

from bertfit import ConfigError, DataError, TextClassifier, predict_file
from bertfit.predict import stdin_chunks


def test_streaming_prediction_keeps_the_input_order(trained_dir, tmp_path):
    clf = TextClassifier.from_pretrained(trained_dir, batch_size=4)
    # Lengths that shuffle hard when sorted: every chunk of 7 is reordered for prediction.
    texts = [("the film was very " * (i % 5)) + ("good" if i % 3 else "awful") + f" {i}" for i in range(50)]
    source = write_csv(tmp_path / "in.csv", [(t,) for t in texts], header=("text",))
    assert predict_file(clf, source, tmp_path / "out.jsonl", chunk_size=7) == 50
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == texts
    expected = clf.predict_proba(texts)
    for row, probs in zip(rows, expected):
        assert abs(row["prob_pos"] - probs[1]) < 1e-5
    assert predict_file(clf, source, tmp_path / "out.csv", chunk_size=50) == 50
    with open(tmp_path / "out.csv", newline="") as handle:
        assert [row["text"] for row in csv.DictReader(handle)] == texts


def test_kept_columns_stay_beside_their_rows(trained_dir, tmp_path):
    clf = TextClassifier.from_pretrained(trained_dir, batch_size=4)
    texts = [("the film was very " * (i % 5)) + ("good" if i % 3 else "awful") for i in range(30)]
    rows = [(f"id-{i}", t, ["a", "b"] if i % 2 else None) for i, t in enumerate(texts)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "text": t, "tags": g}) + "\n" for i, t, g in rows))
    for workers in (1, 2):  # several workers read ahead: the kept cells must still meet their own rows
        out = tmp_path / f"out{workers}.jsonl"
        predict_file(clf, source, out, chunk_size=4, keep_columns=["id", "tags"], num_workers=workers)
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["id"], r["text"], r["tags"]) for r in written] == [(i, t, g) for i, t, g in rows]
        assert list(written[0])[:3] == ["id", "tags", "text"]
    predict_file(clf, source, tmp_path / "out.csv", keep_columns=["tags"])
    with open(tmp_path / "out.csv", newline="") as handle:
        assert [row["tags"] for row in csv.DictReader(handle)][:2] == ["", "a;b"]  # a list cell joined as labels are


def test_kept_columns_are_checked(trained_dir, tmp_path):
    clf = TextClassifier.from_pretrained(trained_dir)
    source = write_csv(tmp_path / "in.csv", [("good", "pos")], header=("text", "label"))
    with pytest.raises(ConfigError, match=r"\['label'\] would share a name with the prediction columns"):
        predict_file(clf, source, tmp_path / "a.csv", keep_columns=["label"])
    with pytest.raises(DataError, match=r"--keep-columns \['id'\] are not columns of .*found \['label', 'text'\]"):
        predict_file(clf, source, tmp_path / "b.csv", keep_columns=["id"])
    with pytest.raises(ConfigError, match="needs an --input file"):
        predict_file(clf, "-", tmp_path / "c.csv", keep_columns=["id"])
    assert not any(tmp_path.glob("[abc].csv"))


class _LazyLines(io.RawIOBase):
    """A stdin of a million lines made as they are read, counting the bytes handed out."""

    def __init__(self, lines: int = 1_000_000) -> None:
        self.lines, self.next, self.bytes_read, self.pending = lines, 0, 0, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while len(self.pending) < len(buffer) and self.next < self.lines:
            self.pending += f"text {self.next}\n".encode()
            self.next += 1
        size = min(len(buffer), len(self.pending))
        buffer[:size], self.pending = self.pending[:size], self.pending[size:]
        self.bytes_read += size
        return size


def test_stdin_is_read_in_chunks_as_it_arrives(monkeypatch):
    raw = _LazyLines()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BufferedReader(raw)))
    chunks = stdin_chunks(chunk_size=100)
    assert next(chunks) == [f"text {i}" for i in range(100)]
    assert next(chunks)[0] == "text 100"
    assert raw.bytes_read < 64 * 1024  # of about 12 MB: memory stays flat


def test_predict_file_from_stdin_to_a_file_and_to_stdout(trained_dir, tmp_path, monkeypatch, capsys):
    clf = TextClassifier.from_pretrained(trained_dir)
    texts = ["the film was superb", "", "the plot is really awful"]
    stdin = "".join(json.dumps({"text": t}) + "\r\n" for t in texts).encode()  # CRLF line ends too
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(stdin)))
    assert predict_file(clf, "-", tmp_path / "out.jsonl") == 3
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == texts and rows[0]["label"] == clf.predict(texts[0])
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO("\n".join(texts).encode())))
    assert predict_file(clf, "-", "-", output_format="jsonl") == 3
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == texts
