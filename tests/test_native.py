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


# -- training on bertfit's own BERT --------------------------------------------------------------------------------


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model.train()


@pytest.mark.parametrize("multi_label", [False, True])
def test_training_mode_loss_and_gradients_equal_transformers(tiny_model_dir, multi_label):
    from bertfit.native import load_trainable

    labels = ["a", "b", "c"]
    model, tokenizer = load_trainable(tiny_model_dir, labels, multi_label)
    problem = {"problem_type": "multi_label_classification"} if multi_label else {}
    reference = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3, **problem)
    reference.load_state_dict(model.state_dict())  # the same head
    reference.config.attention_probs_dropout_prob = 0.0
    batch = tokenizer.pad(tokenizer(TEXTS[:12], truncation=True, max_length=64))  # padded: the mask matters
    targets = torch.tensor([[1.0, 0.0, 1.0]] * 12) if multi_label else torch.arange(12) % 3
    outputs = []
    for m in (_no_dropout(model), _no_dropout(reference)):
        out = m(**batch, labels=targets)
        out.loss.backward()
        outputs.append((out.loss.detach(), {n: p.grad for n, p in m.named_parameters() if p.grad is not None}))
    (loss, grads), (expected_loss, expected_grads) = outputs
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=1e-6)
    assert set(grads) == set(expected_grads) and len(grads) == len(list(model.parameters()))
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-6, rtol=1e-5, msg=name)
    assert not grads["bert.embeddings.word_embeddings.weight"][tokenizer.pad_token_id].any()  # no update of [PAD]


def test_dropout_in_training_mode_only_and_through_the_cpu_kernels(tiny_model_dir):
    from bertfit.kernels import Dropout, cpu_training_kernels
    from bertfit.native import load_trainable

    model, tokenizer = load_trainable(tiny_model_dir, ["a", "b"])
    batch = tokenizer.pad(tokenizer(TEXTS[:8], truncation=True, max_length=64))
    with torch.no_grad():
        evaluated = model.eval()(**batch).logits
        torch.manual_seed(1)
        trained = model.train()(**batch).logits
        with cpu_training_kernels(model, "cpu"):
            assert isinstance(model.bert.encoder.layer[0].attention.self.dropout, Dropout)
            swapped = model(**batch).logits
            model.eval()
            swapped_eval = model(**batch).logits
    assert type(model.bert.encoder.layer[0].attention.self.dropout) is torch.nn.Dropout  # put back
    assert not torch.allclose(trained, evaluated) and not torch.allclose(swapped, evaluated)
    torch.testing.assert_close(swapped_eval, evaluated)


def test_load_trainable_reads_encoder_and_pretraining_checkpoints_and_initializes_the_head(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    from transformers import BertForMaskedLM

    from bertfit.native import load_trainable

    encoder = load_file(tiny_model_dir / "model.safetensors")  # BertModel: no "bert." prefix, a pooler
    pretraining = shutil.copytree(tiny_model_dir, tmp_path / "mlm")
    BertForMaskedLM.from_pretrained(tiny_model_dir).save_pretrained(pretraining)  # "bert." prefix, "cls." heads
    for path in (tiny_model_dir, pretraining):
        torch.manual_seed(0)
        model, _ = load_trainable(path, ["a", "b", "c"])
        state = model.state_dict()
        torch.testing.assert_close(
            state["bert.encoder.layer.0.attention.self.query.weight"],
            encoder["encoder.layer.0.attention.self.query.weight"],
        )
        assert state["classifier.weight"].shape == (3, 32) and not state["classifier.bias"].any()
        assert 0.005 < float(state["classifier.weight"].std()) < 0.04  # normal(0, initializer_range=0.02)
        assert all(p.requires_grad for p in model.parameters())
    legacy = shutil.copytree(tiny_model_dir, tmp_path / "legacy")  # LayerNorm.gamma/beta, as bert-base-uncased has
    renamed = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in encoder.items()
    }
    save_file(renamed, legacy / "model.safetensors")
    torch.manual_seed(0)
    legacy_model, _ = load_trainable(legacy, ["a", "b", "c"])
    torch.testing.assert_close(
        legacy_model.state_dict()["bert.embeddings.LayerNorm.weight"], encoder["embeddings.LayerNorm.weight"]
    )
    unknown = shutil.copytree(tiny_model_dir, tmp_path / "unknown")
    save_file({**encoder, "encoder.extra.weight": torch.zeros(2)}, unknown / "model.safetensors")
    assert load_trainable(unknown, ["a", "b"]) is None  # transformers loads it, and says what it makes of it
    half = shutil.copytree(tiny_model_dir, tmp_path / "half")
    save_file({k: v.half() for k, v in encoder.items()}, half / "model.safetensors")
    assert load_trainable(half, ["a", "b"]) is None


def test_native_and_transformers_training_give_the_same_model(tiny_config, tmp_path):
    # The same seed draws the same head and the same dropout masks: the two engines train to the same weights.
    from safetensors.torch import load_file

    from bertfit import train
    from bertfit.data import TextDataset

    rows = sentiment_rows(60)
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    saved = []
    for native in (True, False):
        out = tmp_path / f"native-{native}"
        train(tiny_config(native=native, epochs=2, baselines=False, output_dir=str(out)), data)
        saved.append(load_file(out / "model.safetensors"))
    assert set(saved[0]) == set(saved[1])
    for name, tensor in saved[0].items():
        torch.testing.assert_close(tensor, saved[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_bertfit_train_of_a_bert_imports_no_transformers(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "model"
    script = (
        "import sys; from bertfit.cli import main; sys.argv = ['bertfit', 'train', '--data', "
        f"{str(sentiment_csv)!r}, '--model', {str(tiny_model_dir)!r}, '--output-dir', {str(out)!r}, "
        "'--epochs', '1', '--quiet']\ntry:\n    main()\nexcept SystemExit as exit:\n"
        "    assert not exit.code, exit.code\n"
        "print(sorted(m for m in sys.modules if m.startswith('transformers')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "[]"
    reference = AutoModelForSequenceClassification.from_pretrained(out).eval()  # a directory transformers reads
    assert reference.config.id2label == {0: "neg", 1: "pos"}
    assert AutoTokenizer.from_pretrained(out)("good")["input_ids"][0] == 2  # [CLS]


def test_a_model_fitted_in_memory_saves_and_converts_to_transformers_on_first_use(tiny_config, tmp_path):
    rows = sentiment_rows(60)
    clf = TextClassifier(config=tiny_config())
    clf.fit([t for t, _ in rows], [label for _, label in rows])
    assert isinstance(clf._native[0], BertClassifier) and clf._native[2] is None
    before = clf.predict_proba(TEXTS)
    saved = clf.save_pretrained(tmp_path / "model")  # written by the native model itself, no conversion
    assert clf._native is not None
    np.testing.assert_allclose(TextClassifier.from_pretrained(saved).predict_proba(TEXTS), before, atol=1e-6)
    reference = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    assert reference.config.architectures == ["BertForSequenceClassification"]
    assert clf.model_.config.architectures == ["BertForSequenceClassification"]
    np.testing.assert_allclose(clf.predict_proba(TEXTS), before, atol=1e-6)
