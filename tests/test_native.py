"""Prediction without transformers (bertfit.native): the plain-PyTorch BERT and the tokenizers-only tokenizer give
what transformers gives, a saved model predicts with them, and anything they do not reproduce goes to transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import sentiment_rows
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bertfit import TextClassifier
from bertfit.fast_tokenizer import FastTokenizer
from bertfit.native import BertClassifier, load_native

TEXTS = [
    *[text for text, _ in sentiment_rows(40)],
    "",
    "   ",
    "[CLS] hello [SEP] [PAD] [MASK]",
    "Ünïcödé café, naïve: ÉTÉ!",
    "the film was good " * 40,  # longer than the tiny model's 64 tokens
]


@pytest.fixture(scope="module")
def pair(trained_dir):
    native = load_native(trained_dir)
    assert native is not None, "a BERT that bertfit trained loads without transformers"
    reference = AutoModelForSequenceClassification.from_pretrained(trained_dir).eval()
    return native, (reference, AutoTokenizer.from_pretrained(trained_dir))


@pytest.mark.parametrize(
    "options",
    [
        {"truncation": True, "max_length": 64},
        {"truncation": True, "max_length": 12},
        {"truncation": True, "max_length": 12, "stride": 4, "return_overflowing_tokens": True},
    ],
)
def test_tokenizer_gives_transformers_ids_windows_and_padding(pair, options):
    (_, tokenizer), (_, reference) = pair
    ours, theirs = tokenizer(TEXTS, **options), reference(TEXTS, **options)
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key] == list(theirs[key]), key
    columns = {k: v for k, v in ours.items() if k != "overflow_to_sample_mapping"}
    padded, expected = tokenizer.pad(columns), reference.pad(columns, return_tensors="pt")
    assert set(padded) == set(expected)
    for key in padded:
        assert torch.equal(padded[key], expected[key]), key


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_model_logits_equal_transformers(pair, dtype):
    (model, tokenizer), (reference, _) = pair
    batch = tokenizer.pad(tokenizer(TEXTS, truncation=True, max_length=64))
    autocast = torch.autocast("cpu", dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), autocast:
        ours, theirs = model(**batch).logits, reference(**batch).logits
    assert ours.shape == (len(TEXTS), reference.config.num_labels)
    torch.testing.assert_close(ours.float(), theirs.float(), atol=1e-5 if dtype is None else 1e-2, rtol=0)


def test_a_saved_model_predicts_without_importing_transformers_sklearn_or_pandas(trained_dir):
    script = (
        "import sys; from bertfit.model import load_classifier; "
        f"clf = load_classifier({str(trained_dir)!r}); print(clf.predict(['the film was good'])[0]); "
        "print(sorted(m for m in sys.modules if m.startswith(('transformers', 'sklearn', 'pandas'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] in TextClassifier.from_pretrained(trained_dir).labels
    assert out[1] == "[]"


def test_the_transformers_model_loads_on_first_use_and_predictions_do_not_change(trained_dir):
    clf = TextClassifier.from_pretrained(trained_dir)
    before = clf.predict_proba(TEXTS)
    assert isinstance(clf._native[0], BertClassifier) and isinstance(clf._native[1], FastTokenizer)
    assert clf.model_.config.model_type == "bert"  # transformers' model, loaded now
    assert clf._native is None  # and it predicts from here on
    np.testing.assert_allclose(clf.predict_proba(TEXTS), before, atol=1e-6)
    assert clf.tokenizer_("a text")["input_ids"][0] == clf.tokenizer_.cls_token_id


@pytest.mark.parametrize(
    "change",
    [
        {"position_embedding_type": "relative_key"},
        {"hidden_act": "silu"},
        {"model_type": "roberta"},
        {"architectures": ["BertForMaskedLM"]},
    ],
)
def test_a_config_it_does_not_reproduce_is_left_to_transformers(trained_dir, tmp_path, change):
    copy = shutil.copytree(trained_dir, tmp_path / "model")
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, **change}))
    assert load_native(copy) is None


def test_unexpected_weights_or_a_missing_tokenizer_file_are_left_to_transformers(trained_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    extra = shutil.copytree(trained_dir, tmp_path / "extra")
    state = load_file(extra / "model.safetensors")
    save_file({**state, "bert.extra.weight": torch.zeros(2)}, extra / "model.safetensors")
    assert load_native(extra) is None
    no_json = shutil.copytree(trained_dir, tmp_path / "no-json")
    (no_json / "tokenizer.json").unlink()
    assert load_native(no_json) is None


def test_a_model_bertfit_did_not_train_loads_with_transformers(tiny_model_dir, tmp_path):
    plain = tmp_path / "plain"
    AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3).save_pretrained(plain)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(plain)
    clf = TextClassifier.from_pretrained(plain)
    assert clf._native is None and clf.predict_proba(["the film"]).shape == (1, 3)
