"""bertfit audit: planted label errors rank first, conflicting duplicates are found, and the CLI writes its files."""

from __future__ import annotations

import csv
import random
import sys

import numpy as np
import pytest
from conftest import NEGATIVE, POSITIVE, write_csv
from scipy import sparse
from typer.testing import CliRunner

from bertfit.audit import (
    HTML_FILE,
    ISSUES_FILE,
    audit,
    conflicting_duplicates,
    format_audit,
    near_duplicate_pairs,
    normalize_text,
)
from bertfit.cli import app
from bertfit.data import TextDataset
from bertfit.exceptions import ConfigError, DataError, MissingDependencyError, OutputExistsError

runner = CliRunner()
NEUTRAL = "the a an film movie plot actor story is was very really quite and or but it this that of to".split()
PLANTED = 8


def labelled_rows(n: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """Distinct texts of three neutral words and one sentiment word, which alone decides the label."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "pos" if len(rows) % 2 == 0 else "neg"
        words = [*rng.sample(NEUTRAL, 3), rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


def planted(rows, k: int = PLANTED, seed: int = 1) -> tuple[list[tuple[str, str]], set[int]]:
    """``rows`` with the labels of ``k`` random rows flipped, and their positions."""
    flipped = set(random.Random(seed).sample(range(len(rows)), k))
    other = {"pos": "neg", "neg": "pos"}
    return [(t, other[lab] if i in flipped else lab) for i, (t, lab) in enumerate(rows)], flipped


def _top(result, k: int) -> set[int]:
    return {int(i) for i in np.argsort(result.quality, kind="stable")[:k]}


def test_planted_label_errors_rank_first_and_rows_point_into_the_file(tmp_path):
    rows, flipped = planted(labelled_rows())
    # A blank text at data row 5 is not audited, so later texts sit one data row below their dataset position.
    path = write_csv(tmp_path / "data.csv", [*rows[:5], ("  ", "pos"), *rows[5:]])
    result = audit(path, features="tfidf")
    assert len(result.rows) == len(rows) and result.rows[4] == 4 and result.rows[5] == 6
    # Nearly all planted errors come first (7 or 8 of the top 8 over seeds 1-10 of the flips), all within the top 16.
    assert len(_top(result, PLANTED) & flipped) >= PLANTED - 1 and _top(result, 2 * PLANTED) >= flipped
    assert len(flipped & set(np.flatnonzero(result.label_issue).tolist())) >= PLANTED - 1
    with open(path, newline="", encoding="utf-8") as handle:
        file_rows = list(csv.DictReader(handle))
    by_text = {row["text"]: row for row in result.issues}
    for i in flipped & {int(i) for i in np.flatnonzero(result.label_issue)}:
        row = by_text[rows[i][0]]
        assert file_rows[row["row"]]["text"] == rows[i][0] and row["given_label"] == rows[i][1]
        assert row["suggested_label"] != rows[i][1] and "label" in row["issue"].split(";")
    ranks = [row["quality"] for row in result.issues]
    assert ranks == sorted(ranks) and [row["rank"] for row in result.issues] == list(range(1, len(ranks) + 1))
    assert result.issues[0]["row"] in {int(result.rows[i]) for i in flipped}


def test_clean_data_has_few_issues_and_high_out_of_fold_accuracy():
    rows = labelled_rows()
    result = audit(TextDataset([t for t, _ in rows], [lab for _, lab in rows]), features="tfidf")
    assert result.oof_accuracy >= 0.95
    assert result.label_issue.sum() <= 3
    assert np.allclose(result.pred_probs.sum(axis=1), 1.0)


def test_frozen_embeddings_of_the_tiny_model_find_the_planted_errors(tiny_model_dir):
    # The random tiny BERT's mean-pooled states still tell its vocabulary's words apart; the label word decides.
    rows, flipped = planted(labelled_rows())
    data = TextDataset([t for t, _ in rows], [lab for _, lab in rows])
    result = audit(data, model_name_or_path=str(tiny_model_dir), near_duplicates=False)
    assert result.method.startswith("embeddings + logistic regression (C=") and "5-fold" in result.method
    # Random weights give weak features (out-of-fold accuracy about 0.87): most planted errors still rank in the top
    # 16 of 300 rows, where chance would put fewer than one.
    assert len(_top(result, 2 * PLANTED) & flipped) >= PLANTED - 3


def test_fine_tuning_per_fold_finds_the_planted_errors(tiny_config):
    rows, flipped = planted(labelled_rows(120), k=4)
    data = TextDataset([t for t, _ in rows], [lab for _, lab in rows])
    config = tiny_config(epochs=8)
    result = audit(data, folds=2, fine_tune=True, model_name_or_path=config.model_name_or_path, train_config=config)
    assert result.method.startswith("fine-tuned model, 2-fold")
    assert len(_top(result, 8) & flipped) >= 3


def test_conflicting_duplicates_after_normalizing_case_spaces_and_punctuation(tmp_path):
    assert normalize_text("  Great   FILM!!! ") == normalize_text("great film") == "great film"
    assert normalize_text("!!!") != normalize_text("???")
    groups = conflicting_duplicates(
        ["Great film!", "good", "great  film", "GREAT FILM", "good"], ["p", "p", "n", "p", "p"]
    )
    assert [g.tolist() for g in groups] == [[0, 2, 3]]  # "good" twice with one label is no conflict
    rows = labelled_rows(60)
    rows += [("What a GREAT film!", "pos"), ("what a great film", "neg")]
    result = audit(write_csv(tmp_path / "d.csv", rows), features="tfidf", near_duplicates=False)
    duplicates = [row for row in result.issues if "conflicting_duplicate" in row["issue"]]
    assert sorted(row["row"] for row in duplicates) == [60, 61]
    assert {row["related_rows"] for row in duplicates} == {"60", "61"}


def test_near_duplicates_are_the_most_similar_row_with_another_label():
    x = np.array([[1.0, 0.0, 0.0], [0.99, 0.05, 0.0], [0.98, 0.0, 0.1], [0.0, 1.0, 0.0]])
    labels = ["a", "b", "a", "b"]
    pairs = near_duplicate_pairs(x, labels, 0.95, chunk_cells=4)  # one row per chunk
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0), (2, 1)]
    assert all(0.95 <= s <= 1.0 for _, _, s in pairs)
    assert [(i, j) for i, j, _ in near_duplicate_pairs(sparse.csr_matrix(x), labels, 0.95)] == [(0, 1), (1, 0), (2, 1)]
    # Rows with an equal key (e.g. the same normalized text) are not compared.
    assert near_duplicate_pairs(x, labels, 0.95, exclude=["k", "k", "k", "z"]) == []


def test_near_duplicates_are_reported_with_their_similarity(tmp_path):
    rows = labelled_rows(60) + [("the plot of this film was great and the actor was good", "pos")]
    rows.append(("the plot of this film was great and the actor was good too", "neg"))
    result = audit(TextDataset([t for t, _ in rows], [lab for _, lab in rows]), features="tfidf", similarity=0.8)
    near = {row["row"]: row for row in result.issues if "near_duplicate" in row["issue"]}
    assert set(near) >= {60, 61} and near[60]["related_rows"] == "61" and near[60]["similarity"] >= 0.8


def test_multi_label_planted_errors_rank_first():
    # Label set from the words: a positive word means joy, a negative one sad, both both.
    rng = random.Random(0)
    texts, labels, seen = [], [], set()
    while len(texts) < 240:
        kind = [("joy",), ("sad",), ("joy", "sad")][len(texts) % 3]
        words = rng.sample(NEUTRAL, 3)
        words += [rng.choice(POSITIVE)] if "joy" in kind else []
        words += [rng.choice(NEGATIVE)] if "sad" in kind else []
        rng.shuffle(words)
        if " ".join(words) not in seen:
            seen.add(" ".join(words))
            texts.append(" ".join(words))
            labels.append(list(kind))
    # joy -> sad, sad -> joy, joy -> sad, both -> joy (row i's true kind is i % 3)
    wrong = {3: ["sad"], 10: ["joy"], 120: ["sad"], 101: ["joy"]}
    for i, label_set in wrong.items():
        labels[i] = label_set
    result = audit(TextDataset(texts, labels), features="tfidf", near_duplicates=False)
    assert result.multi_label
    assert len(_top(result, len(wrong)) & set(wrong)) >= len(wrong) - 1 and _top(result, 2 * len(wrong)) >= set(wrong)
    assert result.suggested[3] == ("joy",) and result.suggested[10] == ("sad",)


def test_cli_writes_the_ranked_csv_and_a_self_contained_page(tmp_path):
    rows, flipped = planted(labelled_rows())
    # A conflicting pair (equal once punctuation goes), so that the markup shows in the page.
    rows += [("<script>alert(1)</script> good film", "pos"), ("script alert 1 script good film", "neg")]
    path = write_csv(tmp_path / "data.csv", rows)
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", "--data", str(path), "--output", str(out), "--features", "tfidf"])
    assert result.exit_code == 0, result.output
    assert f"Audited {len(rows)} rows" in result.output and "Lowest label quality first (top 5)" in result.output
    assert str(out / ISSUES_FILE) in result.output
    with open(out / ISSUES_FILE, newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert flipped <= {int(row["row"]) for row in written[: 2 * PLANTED + 2]}  # the pair added above may rank high
    page = (out / HTML_FILE).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert "http://" not in page and "https://" not in page
    # An existing output is refused and left as it was; --overwrite replaces it.
    again = runner.invoke(app, ["audit", "--data", str(path), "--output", str(out), "--features", "tfidf"])
    assert again.exit_code == 3 and "OutputExistsError: " in again.stderr and "--overwrite" in again.stderr
    assert (out / ISSUES_FILE).read_text(encoding="utf-8").count("\n") == len(written) + 1
    args = ["audit", "--data", str(path), "--output", str(out), "--features", "tfidf", "--overwrite", "--folds", "3"]
    assert runner.invoke(app, args).exit_code == 0


@pytest.mark.parametrize(
    ("content", "options", "error", "message"),
    [
        (b"text,label\ngood,pos\nbad,pos\n", {}, DataError, "single class ['pos']"),
        (b"text,label\ngood,pos\nbad,neg\n", {}, DataError, "fewer than --folds 5"),
        (b"body,target\nx,y\n", {}, DataError, "--text-column/--label-column"),
        (b"text,label\ngood,pos\nbad,neg\n", {"folds": 1}, ConfigError, "at least 2"),
        (b"text,label\ngood,pos\nbad,neg\n", {"features": "bow"}, ConfigError, "unknown features 'bow'"),
        (b"text,label\ngood,pos\nbad,neg\n", {"similarity": 1.5}, ConfigError, "similarity must be in (0, 1]"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, content, options, error, message):
    path = tmp_path / "data.csv"
    path.write_bytes(content)
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        audit(path, tmp_path / "out", features=options.pop("features", "tfidf"), **options)
    assert not (tmp_path / "out").exists()


def test_cli_errors_exit_3(tmp_path):
    path = write_csv(tmp_path / "data.csv", [("good", "pos"), ("bad", "pos")])
    result = runner.invoke(app, ["audit", "--data", str(path), "--output", str(tmp_path / "o"), "--features", "tfidf"])
    assert result.exit_code == 3 and "DataError: " in result.stderr and "Traceback" not in result.output
    assert runner.invoke(app, ["audit", "--data", str(path), "--folds", "1"]).exit_code == 2  # click's own check


def test_missing_cleanlab_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[audit\]'"):
        audit(write_csv(tmp_path / "d.csv", labelled_rows(20)), features="tfidf")


def test_existing_output_is_refused_before_any_work(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        audit(write_csv(tmp_path / "d.csv", labelled_rows(20)), tmp_path / "out", features="tfidf")
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"


def test_summary_names_counts_and_files(tmp_path):
    rows, _ = planted(labelled_rows())
    result = audit(write_csv(tmp_path / "d.csv", rows), tmp_path / "out", features="tfidf")
    text = format_audit(result)
    assert f"label issues (cleanlab)        {int(result.label_issue.sum())}" in text
    assert f"Wrote {tmp_path / 'out' / ISSUES_FILE}" in text
