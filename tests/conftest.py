"""Shared fixtures: a tiny random BERT saved offline, and small labelled data files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

WORDS = (
    "good great fine nice lovely superb excellent happy bad awful poor terrible horrible sad boring worst "
    "the a an film movie plot actor story is was very not really quite and or but it this that of to "
    "free prize call now win winner cash claim txt reply urgent hello meet dinner tonight see you at home later"
).split()
POSITIVE = ["good", "great", "fine", "nice", "lovely", "superb", "excellent", "happy"]
NEGATIVE = ["bad", "awful", "poor", "terrible", "horrible", "sad", "boring", "worst"]


@pytest.fixture(autouse=True, scope="session")
def _token_cache(tmp_path_factory):
    """Keep the tokenization cache of every test run in a temporary directory, never in ~/.cache; checkpoint at
    every evaluation."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BERTFIT_CACHE", str(tmp_path_factory.mktemp("bertfit-cache")))
        # A checkpoint at every evaluation: the tiny runs of the tests are far shorter than the default interval.
        patch.setenv("BERTFIT_CHECKPOINT_SECONDS", "0")
        yield


def build_tiny_bert(path: Path, words=WORDS, chars: str = "abcdefghijklmnopqrstuvwxyz0123456789.,!?'") -> Path:
    """Save a 2-layer, hidden-32 BERT with random weights (seed 0) and the WordPiece vocabulary [PAD] [UNK] [CLS]
    [SEP] [MASK], ``words``, ``chars`` to ``path``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars]
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True, model_max_length=64
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and a hand-written WordPiece vocabulary."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


# Sentiment-free openings of the generated texts; a sentiment (or label) word follows each.
FILLERS = ["the film was", "this movie is", "the plot is really", "it was quite", "the actor was very"]


def sentiment_rows(n: int = 120, seed: int = 0) -> list[tuple[str, str]]:
    """Short texts whose label ('pos'/'neg') is given by the one sentiment word they hold."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        word = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
        rows.append((f"{rng.choice(FILLERS)} {word}", label))
    return rows


def write_csv(path: Path, rows, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def sentiment_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "sentiment.csv", sentiment_rows())


# Training options that make the tiny model learn the sentiment data in about a second.
# No baselines by default: the session's trained_dir and the CLI tests train with them.
TINY_TRAINING = {
    "epochs": 5,
    "batch_size": 8,
    "learning_rate": 5e-3,
    "precision": "fp32",
    "warmup_ratio": 0.0,
    "baselines": False,
    "evals_per_epoch": 1,  # the tests count evaluations by epoch; the automatic choice has a test of its own
}


@pytest.fixture
def tiny_config(tiny_model_dir):
    """A factory of TrainConfigs for the tiny model: ``tiny_config(epochs=1, ...)``."""
    from bertfit import TrainConfig

    def make(**overrides):
        return TrainConfig(**{"model_name_or_path": str(tiny_model_dir), **TINY_TRAINING, **overrides})

    return make


@pytest.fixture(scope="session")
def trained_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A model directory trained once per session on the sentiment data (read-only for tests)."""
    from bertfit import TrainConfig, train
    from bertfit.data import TextDataset

    rows = sentiment_rows()
    out = tmp_path_factory.mktemp("trained") / "model"
    config = TrainConfig(
        model_name_or_path=str(tiny_model_dir), output_dir=str(out), **{**TINY_TRAINING, "baselines": True}
    )
    train(config, TextDataset([t for t, _ in rows], [lab for _, lab in rows]))
    return out
