"""End-to-end checks with the real embedded model (all-MiniLM-L6-v2). Run with `make test-slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bertfit import TextClassifier, load_data
from bertfit.cli import app
from bertfit.data import train_val_split

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sms_spam.csv"

pytestmark = pytest.mark.slow


def test_default_model_learns_spam_from_a_small_sample(tmp_path):
    # 1,000 messages (stratified), 2 epochs: far above the 13%-spam chance level within about a minute.
    sample, _ = train_val_split(load_data(EXAMPLE), val_size=0.8, seed=0)
    sample_csv = tmp_path / "sample.csv"
    import pandas as pd

    pd.DataFrame({"text": sample.texts, "label": sample.labels}).to_csv(sample_csv, index=False)
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app, ["train", "--data", str(sample_csv), "--output-dir", str(out), "--epochs", "2", "--val-size", "0.2"]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["positive_label"] == "spam"
    assert metrics["f1"] >= 0.85 and metrics["mcc"] >= 0.8
    clf = TextClassifier.from_pretrained(out)
    spam = "URGENT! You have won a 1 week FREE membership in our £100,000 prize Jackpot! Txt the word: CLAIM"
    assert clf.predict(spam) == "spam"
    assert clf.predict("Sorry, I'll call you later, in a meeting") == "ham"
