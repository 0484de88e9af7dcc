"""The model card: the one reader and writer of bertfit.json, an exact round trip, and old files still read."""

from __future__ import annotations

import json

import pytest

from bertfit import ModelError
from bertfit.card import CARD_FILE, ModelCard, read_model_files
from bertfit.decision import DecisionRule
from bertfit.features import Windowing


def test_a_trained_card_round_trips_exactly(trained_dir):
    info = json.loads((trained_dir / CARD_FILE).read_text())
    card = ModelCard.from_info(info)
    assert card.to_info() == info
    assert card.labels == ["neg", "pos"] and card.positive_label == "pos" and card.decision.threshold is not None
    assert card.training.best.metric == "macro_f1" and card.training.validation_data.origin == "split"
    assert card.training.train_data.rows + card.training.validation_data.rows == 120
    assert list(card.training.baselines) == ["majority_class", "tfidf_logreg", "frozen_embeddings_logreg"]


def test_files_of_a_model_directory(trained_dir, tmp_path):
    files = read_model_files(trained_dir)
    assert files.card.max_length == files.card.windowing.max_length and files.metrics["accuracy"] >= 0.9
    assert len(files.records) == 12
    empty = read_model_files(tmp_path)  # a plain directory: nothing of bertfit's
    assert (empty.card, empty.metrics, empty.records) == (None, None, None)
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="could not read the files"):
        read_model_files(tmp_path)
    (tmp_path / CARD_FILE).write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelError, match=r"lacks \['max_length'\]"):
        read_model_files(tmp_path)


def test_an_old_card_without_long_text_or_training_truncates():
    card = ModelCard.from_info({"labels": ["a", "b"], "max_length": 128, "multi_label": False})
    assert card.windowing == Windowing(128, "truncate") and card.training is None
    assert card.decision == DecisionRule(("a", "b")) and card.decision.kind == "argmax"
    assert ModelCard.from_info(card.to_info()) == card
