from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
from conftest import FILLERS, NEGATIVE, POSITIVE, TINY_TRAINING, WORDS, write_csv
from typer.testing import CliRunner

from bertfit import ConfigError, TextClassifier, TextDataset, TrainConfig, evaluate, train
from bertfit.cli import app
from bertfit.features import Windowing, aggregate_logits, cap_windows, encode

WINDOW, STRIDE = 16, 4


def long_rows(n: int = 80, seed: int = 0) -> list[tuple[str, str]]:
    """Texts of 1 to 9 clauses (about 5 to 50 tokens), each clause holding a word of the text's sentiment."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = POSITIVE if label == "pos" else NEGATIVE
        clauses = [f"{rng.choice(FILLERS)} {rng.choice(words)}" for _ in range(rng.randint(1, 9))]
        rows.append((" and ".join(clauses), label))
    return rows


def _dataset(n: int = 80, seed: int = 0) -> TextDataset:
    rows = long_rows(n, seed)
    return TextDataset([t for t, _ in rows], [label for _, label in rows])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def chunk_dir(tiny_model_dir, tmp_path_factory):
    """A model trained in chunk mode on long texts (windows of 16 tokens, overlap 4), saved once per module."""
    out = tmp_path_factory.mktemp("chunked") / "model"
    config = TrainConfig(
        model_name_or_path=str(tiny_model_dir),
        output_dir=str(out),
        long_text="chunk",
        max_length=WINDOW,
        max_windows=8,  # several windows of a long text train
        stride=STRIDE,
        **TINY_TRAINING,
    )
    clf = train(config, _dataset())
    return out, clf


def _content(ids: list[int], tokenizer) -> list[int]:
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id  # every window is a full input
    return ids[1:-1]


@pytest.mark.parametrize(("max_length", "stride"), [(16, 4), (16, 0), (24, 11), (32, 8)])
def test_windows_cover_every_token_with_the_stride(tokenizer, max_length, stride):
    rng = random.Random(max_length + stride)
    long_text = " ".join(rng.choice(WORDS) for _ in range(150))
    short_text = "the film was superb"
    windowing = Windowing(max_length, "chunk", stride)
    windows_of = encode(tokenizer, [short_text, long_text], windowing)
    encoded, text_index = windows_of.columns, windows_of.text_index

    windows = [_content(ids, tokenizer) for ids, text in zip(encoded["input_ids"], text_index) if text == 1]
    tokens = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    size, step = max_length - 2, max_length - 2 - stride
    assert text_index.tolist() == [0] + [1] * len(windows)  # the short text: one window
    assert encoded["input_ids"][0] == tokenizer(short_text)["input_ids"]
    assert len(windows) == 1 + math.ceil((len(tokens) - size) / step)
    assert all(len(window) == size for window in windows[:-1])
    for before, after in zip(windows, windows[1:]):  # consecutive windows share exactly `stride` tokens
        assert before[len(before) - stride :] == after[:stride]
    assert windows[0] + [t for window in windows[1:] for t in window[stride:]] == tokens  # every token, in order


def test_no_window_is_only_overlap(tokenizer):
    # A text that ends exactly at a window boundary gets no extra window repeating the overlap.
    size, step = WINDOW - 2, WINDOW - 2 - STRIDE
    for n_tokens in range(1, 60):
        text_index = encode(tokenizer, ["good " * n_tokens], Windowing(WINDOW, "chunk", STRIDE)).text_index
        assert len(text_index) == 1 + max(0, math.ceil((n_tokens - size) / step))


def test_cap_windows_keeps_the_first_the_last_and_evenly_spaced_ones():
    text_index = np.repeat([0, 1, 2], [1, 3, 10])
    kept = cap_windows(text_index, 3)
    assert kept.tolist() == [0, 1, 2, 3, 4, 8, 13]  # text 2 (windows 4..13): first, middle, last
    assert cap_windows(text_index, 1).tolist() == [0, 1, 4]
    assert cap_windows(np.zeros(0, dtype=np.int64), 3).tolist() == []


def test_windows_reusing_a_first_tokenization_equal_tokenizing_into_windows(tokenizer):
    texts = [text for text, _ in long_rows(40, seed=2)]
    windowing = Windowing(WINDOW, "chunk", STRIDE)
    first = dict(tokenizer(texts, truncation=True, max_length=64))  # the first pass, at the model limit
    direct, reused = encode(tokenizer, texts, windowing), encode(tokenizer, texts, windowing, reuse=first)
    assert reused.columns == direct.columns and reused.text_index.tolist() == direct.text_index.tolist()
    assert len(direct) > len(texts)  # some texts were split


def test_training_windows_are_capped(tokenizer):
    texts = ["good " * 200, "bad"]
    encoded = encode(tokenizer, texts, Windowing(WINDOW, "chunk", STRIDE), max_windows=5)
    assert np.bincount(encoded.text_index).tolist() == [5, 1] and len(encoded.columns["input_ids"]) == 6


def test_aggregation_is_order_independent():
    rng = np.random.default_rng(0)
    text_index = np.repeat(np.arange(6), [1, 4, 2, 7, 1, 3])
    logits = (3 * rng.standard_normal((len(text_index), 5))).astype(np.float32)
    for rule in ("mean", "max"):
        expected = aggregate_logits(logits, text_index, 6, rule)
        for _ in range(5):
            perm = rng.permutation(len(text_index))
            np.testing.assert_array_equal(aggregate_logits(logits[perm], text_index[perm], 6, rule), expected)


def test_mean_and_max_rules():
    logits = np.array([[1.0, 0.0], [3.0, -4.0], [2.0, 2.0], [-1.0, 5.0]], dtype=np.float32)
    text_index = np.array([0, 0, 1, 0])
    np.testing.assert_allclose(aggregate_logits(logits, text_index, 2, "mean"), [[1.0, 1 / 3], [2.0, 2.0]])
    np.testing.assert_array_equal(aggregate_logits(logits, text_index, 2, "max"), [[3.0, 5.0], [2.0, 2.0]])
    # One window per text, in any order: the rows themselves, put in text order.
    np.testing.assert_array_equal(aggregate_logits(logits[:3], np.array([2, 0, 1]), 3), logits[[1, 2, 0]])
    with pytest.raises(ConfigError, match="aggregate must be one of mean, max"):
        aggregate_logits(logits, text_index, 2, "median")


def test_trainer_metrics_are_per_text_not_per_window():
    from bertfit.trainer import epoch_metrics

    # Text 0 ("a") has three windows, one of which leans to "b"; text 1 ("b") has one. Windows arrive shuffled.
    window_texts = np.array([0, 1, 0, 0])
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    metrics = epoch_metrics(["a", "b"], None, ["a", "b"], window_texts, "mean")(logits)
    assert metrics["accuracy"] == 1.0  # per window it would be 0.75


def test_chunk_round_trip(chunk_dir):
    out, trained = chunk_dir
    val_rows = trained.info_["data"]["validation"]["rows"]
    info = json.loads((out / "bertfit.json").read_text())
    long_text = info["long_text"]
    assert {k: long_text[k] for k in ("mode", "stride", "aggregate")} == {
        "mode": "chunk",
        "stride": 4,
        "aggregate": "mean",
    }
    assert long_text["validation_windows"] > val_rows and long_text["train_windows"] > 80 - val_rows
    # Final metrics, report and saved predictions count texts, not windows.
    assert sum(row["support"] for row in trained.metrics["per_class"].values()) == val_rows
    assert len((out / "validation_predictions.jsonl").read_text().splitlines()) == val_rows
    assert trained.metrics["accuracy"] >= 0.8
    # The per-epoch metrics aggregate the Trainer's window logits per text: the best epoch's accuracy is that of the
    # restored model's argmax predictions (a misaligned window -> text mapping scores near chance).
    records = [json.loads(line) for line in (out / "validation_predictions.jsonl").read_text().splitlines()]
    argmax = np.mean([max(trained.labels, key=lambda k: r[f"prob_{k}"]) == r["true_label"] for r in records])
    best = next(row for row in trained.info_["history"] if row["epoch"] == trained.info_["best"]["epoch"])
    assert best["accuracy"] == pytest.approx(argmax)

    loaded = TextClassifier.from_pretrained(out)
    assert loaded.windowing == Windowing(WINDOW, "chunk", STRIDE, "mean")
    test = _dataset(30, seed=7)
    probs = loaded.predict_proba(test.texts)
    assert probs.shape == (30, 2) and len(loaded.predict(test.texts)) == 30
    np.testing.assert_array_equal(probs, trained.predict_proba(test.texts))
    metrics = evaluate(loaded, test)
    assert sum(row["support"] for row in metrics["per_class"].values()) == 30


def test_chunk_predictions_are_the_softmax_of_mean_window_logits(chunk_dir, tokenizer):
    import torch

    _, clf = chunk_dir
    text = long_rows(1, seed=3)[0][0] + " and the plot is really bad"
    encoded = encode(tokenizer, [text], clf.windowing).columns
    with torch.no_grad():  # one window at a time: no padding
        window_logits = [clf.model_(input_ids=torch.tensor([ids])).logits[0] for ids in encoded["input_ids"]]
    assert len(window_logits) > 1
    expected = torch.softmax(torch.stack(window_logits).mean(0), -1).numpy()
    np.testing.assert_allclose(clf.predict_proba(text), expected, rtol=1e-5, atol=1e-6)


def test_onnx_export_of_a_chunk_model_scores_texts_the_same(chunk_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertfit.export import export_onnx
    from bertfit.model import load_classifier

    out, clf = chunk_dir
    result = export_onnx(out, tmp_path / "onnx")
    assert result["texts"] == clf.info_["data"]["validation"]["rows"] and result["label_agreement"] == 1.0
    texts = _dataset(10, seed=9).texts
    np.testing.assert_allclose(
        load_classifier(tmp_path / "onnx").predict_proba(texts), clf.predict_proba(texts), atol=1e-4
    )


def test_chunk_is_the_default_and_old_models_truncate():
    assert TrainConfig().long_text == "chunk"
    assert Windowing.from_info({"max_length": 128}) == Windowing(128, "truncate")


def test_a_slow_tokenizer_truncates_with_a_warning(tiny_model_dir, tmp_path, caplog):
    from transformers import AutoTokenizer, BertTokenizerLegacy

    from bertfit.pipeline import _windowing

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()))
    slow = BertTokenizerLegacy(vocab_file=str(vocab))  # a pure-Python tokenizer
    assert _windowing(TrainConfig(), 32, slow) == Windowing(32, "truncate")
    assert "long_text chunk needs a fast tokenizer and BertTokenizerLegacy is not one" in caplog.text
    fast = _windowing(TrainConfig(), 32, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert fast == Windowing(32, "chunk", 8, "mean")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"long_text": "split"}, "long_text must be one of truncate, chunk"),
        ({"long_text": "chunk", "aggregate": "median"}, "aggregate must be one of mean, max"),
        ({"long_text": "chunk", "stride": -1}, "stride must be an integer >= 0"),
        ({"long_text": "chunk", "max_length": 64, "stride": 33}, r"stride must be an integer from 0 to 32"),
        ({"long_text": "chunk", "max_windows": -1}, "max_windows must be an integer >= 0"),
        ({"long_text": "truncate", "stride": 16}, "stride apply only with long_text 'chunk'"),
        (
            {"long_text": "truncate", "aggregate": "max", "max_windows": 2},
            "aggregate, max_windows apply only with long_text 'chunk'",
        ),
    ],
)
def test_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**options)


def test_stride_is_checked_against_the_chosen_max_length(tiny_config):
    # max_length comes from the data (56 here), so a stride of 40 passes TrainConfig but not train.
    with pytest.raises(ConfigError, match=r"stride must be an integer from 0 to 28 \(half of max_length 56\), got 40"):
        train(tiny_config(long_text="chunk", stride=40), _dataset())


def test_cli_train_takes_the_long_text_flags(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "long.csv", long_rows())
    out = tmp_path / "model"
    args = ["train", "--data", data, "--model", tiny_model_dir, "--output-dir", out, "--epochs", "1", "--quiet"]
    args += ["--precision", "fp32", "--long-text", "chunk", "--max-length", "24", "--aggregate", "max"]
    result = CliRunner().invoke(app, [str(a) for a in args + ["--max-windows", "2"]])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bertfit.json").read_text())
    assert saved["long_text"]["mode"] == "chunk" and saved["long_text"]["stride"] == 6  # 24 // 4
    assert saved["long_text"]["aggregate"] == "max" and saved["config"]["max_windows"] == 2


def test_random_window_sampling_draws_each_epochs_windows_anew(tokenizer):
    from bertfit.trainer import Windows

    texts = ["good " * 200, "bad", "the film was " * 40]
    encoded = encode(tokenizer, texts, Windowing(WINDOW, "chunk", STRIDE))
    windows = Windows(encoded, np.zeros(len(encoded), dtype=np.int64), pad_id=0, sample=2, seed=0)
    epochs = [windows.epoch_windows(epoch) for epoch in range(4)]
    for chosen in epochs:
        per_text = np.bincount(encoded.text_index[chosen], minlength=3)
        assert per_text.tolist() == [2, 1, 2]  # at most 2 per text, every text present: a fixed number of steps
    assert len({tuple(chosen) for chosen in epochs}) > 1  # other windows in other epochs
    assert np.unique(np.concatenate(epochs)).size > 5  # together they cover more of the long texts
    assert Windows(encoded, np.zeros(len(encoded)), pad_id=0).epoch_windows(3).tolist() == list(range(len(encoded)))
