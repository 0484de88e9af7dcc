"""File prediction streams in chunks, sorts each chunk by length, and still writes rows in input order."""

from __future__ import annotations

import csv
import json

from conftest import write_csv

from bertfit import TextClassifier, predict_file


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
