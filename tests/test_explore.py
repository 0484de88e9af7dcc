from __future__ import annotations

import json

import pytest
from conftest import write_csv
from PIL import Image
from typer.testing import CliRunner

from bertfit.cli import app
from bertfit.data import TextDataset
from bertfit.exceptions import DataError
from bertfit.explore import explore, format_summary, tokenize_text
from bertfit.features import suggest_max_length
from bertfit.plots import PLOT_SIZE

TRAIN = [
    ("good film", "pos"),
    ("bad film", "neg"),
    ("good film", "pos"),  # duplicate
    ("good film", "neg"),  # the same text with a conflicting label
    ("the plot was very good", "pos"),
    ("", "pos"),  # empty text
    ("awful", ""),  # no label
    ("great", "pos"),
]
VALIDATION = [("bad film", "neg"), ("Good  Film", "pos"), ("a new story here", "pos")]


@pytest.fixture
def files(tmp_path):
    return write_csv(tmp_path / "train.csv", TRAIN), write_csv(tmp_path / "val.csv", VALIDATION)


def test_counts_lengths_duplicates_and_conflicts_are_exact(files):
    result = explore(files[0])
    train = result["train"]
    assert (train["rows"], train["empty_texts"], train["missing_labels"]) == (8, 1, 1)
    assert train["labels"]["counts"] == {"pos": 4, "neg": 2}  # rows with a text and a label
    assert train["labels"]["shares"] == {"pos": 0.6667, "neg": 0.3333}
    assert train["labels"]["imbalance_ratio"] == 2.0 and not train["labels"]["log_scale"]
    # words of the 7 non-empty texts: 1 1 2 2 2 2 5; percentiles interpolate linearly between ranks
    assert train["lengths"]["words"] == {"mean": 2.14, "median": 2.0, "p95": 4.1, "p99": 4.82, "max": 5}
    assert train["lengths"]["chars"]["max"] == len("the plot was very good")
    assert train["duplicates"] == {"rows": 2, "texts": 1}
    assert train["conflicting_labels"] == {
        "texts": 1,
        "rows": 3,
        "examples": [{"text": "good film", "labels": {"pos": 2, "neg": 1}}],
    }
    assert "tokens" not in train["lengths"] and result["plots"] == []
    assert any("occur with different labels" in note for note in result["notes"])


def test_leakage_and_side_by_side_comparison(files):
    result = explore(*files)
    overlap = result["comparison"]["overlap"]
    assert overlap["rows"] == 1 and overlap["texts"] == 1 and overlap["examples"] == ["bad film"]
    assert overlap["share_of_validation"] == 0.3333
    assert overlap["rows_ignoring_case_and_spaces"] == 2  # "Good  Film" too
    assert result["comparison"]["label_shares"]["pos"] == {"train": 0.6667, "validation": 0.6667}
    assert result["comparison"]["label_distance"] == 0.0
    assert any(note.startswith("leakage: 1 validation row") for note in result["notes"])
    text = format_summary(result)
    assert "== validation:" in text and "1 validation rows (33.3%) share a text with train" in text


def test_token_statistics_truncation_and_suggested_max_length(tiny_model_dir):
    # One word = one token in the tiny vocabulary, plus [CLS] and [SEP]: 99 texts of 10 tokens, one of 100.
    texts = ["good " * 8] * 99 + ["good " * 98]
    result = explore(TextDataset(texts, ["a", "b"] * 50), tokenizer=str(tiny_model_dir))
    train = result["train"]
    assert train["lengths"]["tokens"]["max"] == 100 and train["lengths"]["tokens"]["median"] == 10
    assert train["truncated"] == {"64": 0.01, "128": 0.0, "256": 0.0, "512": 0.0}
    assert train["truncated_at_limit"] == {"max_length": 64, "share": 0.01}
    assert result["model"]["max_length_limit"] == 64
    assert result["model"]["suggested_max_length"] == 16  # p99 = 10.9, rounded up to a multiple of 8 (at least 16)
    assert suggest_max_length([10, 20, 30, 41], 512) == 48 and suggest_max_length([900], 512) == 512


def test_token_statistics_on_a_sample_say_so(tiny_model_dir):
    result = explore(TextDataset(["good film"] * 50, ["a", "b"] * 25), tokenizer=str(tiny_model_dir), sample_size=20)
    assert result["train"]["token_sample"] == {"texts": 20, "of": 50, "sampled": True}
    assert "random sample of 20 of 50 texts" in result["notes"][0]


def test_multi_label_counts_rows_per_label(tmp_path):
    path = write_csv(tmp_path / "go.csv", [("a", "joy;love"), ("b", "joy"), ("c", "neutral")], ("text", "labels"))
    labels = explore(path, label_column="labels", label_sep=";")["train"]["labels"]
    assert labels["counts"] == {"joy": 2, "love": 1, "neutral": 1}
    assert labels["labels_per_text"] == {"1": 2, "2": 1}


def test_plots_are_valid_pngs_of_the_expected_size(files, tiny_model_dir, tmp_path):
    skewed = TextDataset(["good film"] * 40 + ["bad film"] * 2, ["big"] * 40 + ["small"] * 2)
    result = explore(skewed, TextDataset(["bad"], ["small"]), str(tiny_model_dir), tmp_path / "plots")
    assert result["train"]["labels"]["log_scale"]  # imbalance ratio 20 >= 10
    names = sorted(p.rsplit("/", 1)[-1] for p in result["plots"])
    assert names == ["labels.png", "lengths_tokens.png", "lengths_words.png", "truncation.png"]
    for path in result["plots"]:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == PLOT_SIZE
            assert len(image.convert("L").getcolors(maxcolors=1 << 16)) > 10  # not blank


def test_missing_column_is_a_data_error(tmp_path):
    path = write_csv(tmp_path / "x.csv", [("hi", "a")], ("body", "label"))
    with pytest.raises(DataError, match=r"expected columns \['label', 'text'\].*--text-column"):
        explore(path)


def test_tokenize_table(tiny_model_dir, trained_dir):
    result = tokenize_text(str(tiny_model_dir), "good film", max_length=3)
    assert [(t["token"], t["attention_mask"], t["special"]) for t in result["tokens"]] == [
        ("[CLS]", 1, True),
        ("good", 1, False),
        ("film", 1, False),
        ("[SEP]", 1, True),
    ]
    assert result["count"] == 4 and result["truncated"]
    assert (
        tokenize_text(str(trained_dir), "good film")["max_length"]
        == json.loads((trained_dir / "bertfit.json").read_text())["max_length"]
    )


def test_cli_explore_and_tokenize(files, tiny_model_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "plots"
    args = ["explore", str(files[0]), "--validation", str(files[1]), "--model", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "--output-dir", str(out), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["train"]["rows"] == 8 and stats["comparison"]["overlap"]["rows"] == 1
    assert (out / "labels.png").is_file() and (out / "truncation.png").is_file()

    result = runner.invoke(app, [*args, "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 0 and "imbalance ratio 2" in result.stdout
    assert f"model {tiny_model_dir}: limit 64 tokens; suggested max_length 16" in result.stdout

    result = runner.invoke(app, ["tokenize", "--model", str(tiny_model_dir), "good film"])
    assert result.exit_code == 0, result.output
    assert "[CLS]" in result.stdout and "4 tokens (special tokens marked *) of max_length 64" in result.stdout

    result = runner.invoke(app, ["explore", str(tmp_path / "missing.csv")])
    assert result.exit_code == 3 and "DataError: data file" in result.output
