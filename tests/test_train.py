from __future__ import annotations

import functools
import json

import pytest
import torch
from conftest import sentiment_rows

from bertfit import ConfigError, DataError, OutputExistsError, TextClassifier, TextDataset, train
from bertfit.features import choose_max_length
from bertfit.hardware import resolve_precision
from bertfit.trainer import format_history


def _dataset(n=120, seed=0) -> TextDataset:
    rows = sentiment_rows(n, seed)
    return TextDataset([t for t, _ in rows], [lab for _, lab in rows])


def test_train_learns_and_records_history(tiny_config):
    clf = train(tiny_config(), _dataset())
    assert clf.metrics["accuracy"] >= 0.9
    history = clf.info_["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3, 4, 5]
    assert all(set(row) >= {"train_loss", "val_loss", "accuracy", "macro_f1", "seconds"} for row in history)
    best = max(history, key=lambda row: row["macro_f1"])
    assert clf.info_["best"]["value"] == best["macro_f1"]
    assert clf.info_["data"]["validation"] == {**clf.info_["data"]["validation"], "rows": 12, "from": "split"}
    assert 0 <= clf.info_["padding_share"] < 0.5


def test_best_epoch_is_restored_not_the_last(tiny_config):
    # A learning rate this high makes later epochs worse; the restored model must score like the best epoch.
    config = tiny_config(learning_rate=0.3, epochs=4, metric_for_best_model="accuracy", threshold_metric="none")
    clf = train(config, _dataset())
    best = max(row["accuracy"] for row in clf.info_["history"])
    assert clf.info_["best"]["value"] == best
    assert clf.metrics["accuracy"] == pytest.approx(best, abs=0.09)  # final eval is fp32 predict of that state


def test_early_stopping(tiny_config):
    clf = train(tiny_config(learning_rate=1e-9, epochs=10, early_stopping_patience=2), _dataset())
    assert len(clf.info_["history"]) < 10


def test_collapse_is_reported(tiny_config):
    # With a near-zero learning rate the random head predicts one class for everything.
    clf = train(tiny_config(learning_rate=1e-9, epochs=1), _dataset())
    assert clf.info_["warnings"] and "MODEL COLLAPSE" in clf.info_["warnings"][0]


def test_fit_wraps_train_and_saves_nothing(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = sentiment_rows()
    clf = TextClassifier(tiny_config().model_name_or_path, config=tiny_config())
    assert clf.fit([t for t, _ in rows], [lab for _, lab in rows]) is clf
    assert clf.predict("the film was superb") == "pos"
    assert list(tmp_path.iterdir()) == []


def test_train_saves_output_with_exact_metric_keys(tiny_config, tmp_path):
    out = tmp_path / "model"
    clf = train(tiny_config(output_dir=str(out)), _dataset())
    check = clf.card.training.precision_check  # how predict's default precision agrees with fp32 on validation
    if resolve_precision("auto").name == "fp32":
        assert check is None
    else:
        assert check["texts"] == 12 and 0.9 <= check["label_agreement"] <= 1 and check["max_abs_prob_diff"] < 0.1
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "accuracy",
        "macro_f1",
        "micro_f1",
        "weighted_f1",
        "mcc",
        "per_class",
        "confusion_matrix",
        "positive_label",
        "precision",
        "recall",
        "f1",
        "specificity",
    }
    info = json.loads((out / "bertfit.json").read_text())
    assert info["labels"] == ["neg", "pos"] and info["positive_label"] == "pos"  # a tie goes to the last label
    assert info["data"]["train"]["fingerprint"]
    assert set(info["versions"]) == {"python", "torch", "transformers"}


def test_output_dir_is_checked_before_training(tiny_config, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    with pytest.raises(OutputExistsError):
        train(tiny_config(output_dir=str(out)), TextDataset(["a"], ["x"]))  # data never looked at
    assert (out / "old.txt").read_text() == "keep"


def test_single_class_and_unknown_validation_labels(tiny_config):
    with pytest.raises(DataError, match=r"single class \['x'\]"):
        train(tiny_config(), TextDataset(["a", "b"], ["x", "x"]))
    with pytest.raises(DataError, match=r"validation labels \['z'\]"):
        train(tiny_config(), _dataset(), TextDataset(["a"], ["z"]))


def test_max_length_past_the_position_table_is_refused_before_training(tiny_config, tmp_path):
    # The tiny model has 64 positions: a 65-token window would index past the table in the first forward pass.
    with pytest.raises(ConfigError, match=r"max_length 65 is longer .* reach 64 tokens; pass --max-length 64 or less"):
        train(tiny_config(max_length=65, output_dir=str(tmp_path / "out")), _dataset())
    assert not (tmp_path / "out").exists()
    assert train(tiny_config(max_length=64, epochs=1), _dataset()).max_length == 64


def test_validation_file_is_used_as_given(tiny_config):
    val = _dataset(20, seed=5)
    clf = train(tiny_config(epochs=1), _dataset(), val)
    assert clf.info_["data"]["validation"]["rows"] == 20 and clf.info_["data"]["validation"]["from"] == "file"
    assert sum(row["support"] for row in clf.metrics["per_class"].values()) == 20


def test_choose_max_length_is_p99_rounded_and_capped(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def choose(texts, limit):
        return choose_max_length(
            [len(ids) for ids in tokenizer(texts, truncation=True, max_length=limit)["input_ids"]], limit
        )

    texts = ["good"] * 99 + ["good " * 40]  # 3 tokens x 99, one of 42 tokens
    assert choose(texts, 64) == 16  # p99 ~ 3.4 -> at least 16
    long_texts = ["good " * 30] * 100  # 32 tokens
    assert choose(long_texts, 64) == 32
    assert choose(["good " * 100] * 10, 64) == 64


def test_the_log_counts_texts_past_the_model_limit(tiny_config, caplog):
    # 12 of 120 training texts run past the 64-token limit: p99 is the limit, so max_length is the limit itself,
    # and the first tokenization (cut at 64) must not hide how many texts are longer.
    data = _dataset()
    texts = [text + " very" * 70 if i % 10 == 0 else text for i, text in enumerate(data.texts)]
    with caplog.at_level("INFO", logger="bertfit"):
        clf = train(tiny_config(epochs=1, long_text="chunk"), TextDataset(texts, data.labels), _dataset(20, seed=5))
    assert clf.max_length == 64
    longer = sum(len(ids) > 64 for ids in clf.tokenizer_(texts)["input_ids"])
    assert longer == 12
    assert (
        "max_length 64: the 99th percentile of training token counts (64 or more: texts were cut there), capped at "
        "the model limit 64; 12 training texts (10.0%) reach the model limit of 64 tokens and are split into windows"
    ) in caplog.text
    lengths = [10] * 199 + [50]  # under the limit: the one text longer than the choice is counted exactly
    with caplog.at_level("INFO", logger="bertfit"):
        assert choose_max_length(lengths, 64) == 16
    assert "counts (10), capped at the model limit 64; 1 training texts (0.5%) are truncated" in caplog.text


def test_long_texts_are_cut_at_the_chosen_max_length(tiny_config):
    data = _dataset()
    texts = [text + " very" * 60 if i == 0 else text for i, text in enumerate(data.texts)]  # one text of 60+ tokens
    clf = train(tiny_config(epochs=1), TextDataset(texts, data.labels))
    assert clf.max_length == 16  # p99 of mostly 7-token texts

    from bertfit.features import Windowing, encode

    tokenizer = clf.tokenizer_
    targets = [{"neg": 0, "pos": 1}[label] for label in data.labels]
    # Features at max_length 16 from texts tokenized at 64 (long rows re-cut) and at 16.
    once, direct = (
        encode(tokenizer, texts, Windowing(16), reuse=tokenizer(texts, truncation=True, max_length=cut)).rows(targets)
        for cut in (64, 16)
    )
    assert once == direct and len(once[0]["input_ids"]) == 16  # re-cut rows equal tokenizing at 16 directly


def test_precision_choice():
    precision, device = resolve_precision("auto")
    assert precision in {"bf16", "fp32"} and device == "cpu"
    assert resolve_precision("fp32") == ("fp32", "cpu")
    from bertfit import ConfigError

    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16")


def test_format_history_marks_best_epoch():
    rows = [
        {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "accuracy": 0.8, "macro_f1": 0.7, "seconds": 3.0},
        {"epoch": 2, "train_loss": None, "val_loss": 0.3, "accuracy": 0.9, "macro_f1": 0.8, "seconds": 2.5},
    ]
    text = format_history(rows, best_epoch=2)
    lines = text.splitlines()
    assert lines[0].split() == ["epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds"]
    assert lines[2].split() == ["2*", "-", "0.3000", "0.9000", "0.8000", "2.5"]


def test_split_warns_about_duplicates_on_both_sides(tiny_config, caplog):
    data = _dataset()
    doubled = TextDataset(data.texts * 2, data.labels * 2)  # every text twice: the split leaks
    with caplog.at_level("WARNING", logger="bertfit"):
        train(tiny_config(epochs=1), doubled)
    assert "validation texts" in caplog.text and "also occur in the training data" in caplog.text


def test_class_weight_vector():
    from bertfit.trainer import class_weight_vector

    labels = ["a", "a", "a", "b"]
    assert class_weight_vector("none", labels, ["a", "b"]) is None
    assert class_weight_vector("balanced", labels, ["a", "b"]) == [4 / (2 * 3), 4 / (2 * 1)]
    assert class_weight_vector({"b": 5.0}, labels, ["a", "b"]) == [1.0, 5.0]
    from bertfit import ConfigError

    with pytest.raises(ConfigError, match=r"class_weights name labels \['c'\]"):
        class_weight_vector({"c": 2.0}, labels, ["a", "b"])


def test_weighted_loss_matches_a_hand_computed_one(tiny_model_dir, tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertfit.trainer import loss_fn

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    inputs = dict(tokenizer(["good film", "bad plot", "the actor was sad"], padding=True, return_tensors="pt"))
    labels = torch.tensor([1, 0, 0])
    with torch.no_grad():
        output = model(**inputs, labels=labels)  # the model's own loss: what training uses without class weights
        logits = output.logits.numpy()
        loss_weighted = float(loss_fn(output.logits, labels, torch.tensor([1.0, 4.0]), multi_label=False))
        loss_plain = float(output.loss)
        assert float(loss_fn(output.logits, labels, None, multi_label=False)) == pytest.approx(loss_plain, rel=1e-6)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -log_probs[np.arange(3), [1, 0, 0]]
    w = np.array([4.0, 1.0, 1.0])  # the weight of each text's true label
    assert loss_weighted == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-5)
    assert loss_plain == pytest.approx(float(nll.mean()), rel=1e-5)


def test_balanced_class_weights_train_end_to_end(tiny_config, caplog):
    data = _dataset()
    skewed = data.subset([i for i, label in enumerate(data.labels) if label == "pos" or i % 6 == 1])  # 60 pos, 20 neg
    with caplog.at_level("INFO", logger="bertfit"):
        clf = train(tiny_config(class_weights="balanced"), skewed)
    assert "class weights in the loss: [2.0, 0.6667]" in caplog.text
    assert clf.info_["config"]["class_weights"] == "balanced"


def test_nan_loss_stops_training_and_keeps_the_best_state(tiny_config, tmp_path, monkeypatch):
    from bertfit import TextClassifier, TrainingError
    from bertfit.native import BertClassifier  # the model bertfit trains for a BERT

    original = BertClassifier.forward
    calls = {"train": 0}

    @functools.wraps(original)  # the Trainer reads the signature to find the labels argument
    def forward(self, *args, **kwargs):  # the loss turns NaN in the second epoch (14 steps per epoch here)
        outputs = original(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] > 20:
                outputs = outputs._replace(loss=outputs.loss * float("nan"))
        return outputs

    monkeypatch.setattr(BertClassifier, "forward", forward)
    out = tmp_path / "model"
    with pytest.raises(
        TrainingError,
        match=r"NaN or infinite in epoch 2 .* best state before it \(epoch 1, "
        r"macro_f1 .*\) was kept and saved to .*--lr 1\.7e-03",
    ) as caught:
        train(tiny_config(output_dir=str(out)), _dataset())
    assert caught.value.saved_to == str(out)
    monkeypatch.undo()
    clf = TextClassifier.from_pretrained(out)
    assert [row["epoch"] for row in clf.info_["history"]] == [1]
    assert "NaN or infinite" in clf.info_["warnings"][-1]
    assert clf.predict("the film was superb") in {"pos", "neg"}


def test_binary_threshold_is_tuned_and_saved(tiny_config, tmp_path):
    # Heavy weight on 'neg' makes a model that under-scores 'pos': at 0.5 it calls no text positive. 60 validation
    # texts (30 of each class) hold enough of both classes, and the gain of a lower threshold is far above the noise.
    # (This test trained on the default split before: 12 validation texts, which now keep 0.5; see the next test.)
    out = tmp_path / "model"
    config = tiny_config(output_dir=str(out), epochs=2, class_weights={"neg": 8.0})
    clf = train(config, _dataset(), _dataset(60, seed=7))
    tuning = clf.info_["threshold_tuning"]
    assert 0 < clf.threshold < 0.5 and tuning["metric"] == "f1"
    assert set(tuning["at_0.5"]) == {"accuracy", "macro_f1", "precision", "recall", "f1", "specificity"}
    assert tuning["value"] == pytest.approx(clf.metrics["f1"])  # metrics.json: predictions at the tuned threshold
    assert tuning["value"] > tuning["at_0.5"]["f1"] + 0.3
    assert TextClassifier.from_pretrained(out).threshold == clf.threshold
    untuned = train(tiny_config(threshold_metric="none", epochs=1), _dataset())
    assert untuned.threshold is None and "threshold_tuning" not in untuned.info_


def test_a_small_validation_set_keeps_the_threshold_at_half(tiny_config, caplog):
    with caplog.at_level("INFO", logger="bertfit"):
        clf = train(tiny_config(), _dataset())  # 12 validation texts: 6 of each class
    assert clf.threshold == 0.5 and clf.info_["threshold_tuning"]["value"] == pytest.approx(clf.metrics["f1"])
    assert (
        "decision threshold kept at 0.5 on P(pos) (the most probable label): validation holds 6 positive and 6 "
        "negative texts; a threshold is tuned on at least 10 of each"
    ) in caplog.text
    texts = [text for text, _ in sentiment_rows(40, seed=3)]
    probs = clf.predict_proba(texts)
    assert clf.predict(texts) == [clf.labels[k] for k in probs.argmax(axis=1)]


def test_frozen_embeddings_stay_as_loaded(tiny_config, tiny_model_dir):
    from transformers import AutoModel

    clf = train(tiny_config(epochs=1, freeze_embeddings=True), _dataset())
    loaded = AutoModel.from_pretrained(tiny_model_dir)
    trained = clf.model_.base_model
    assert torch.equal(trained.embeddings.word_embeddings.weight, loaded.embeddings.word_embeddings.weight)
    assert not torch.equal(trained.encoder.layer[0].output.dense.weight, loaded.encoder.layer[0].output.dense.weight)


def test_evaluations_twice_per_epoch(tiny_config):
    clf = train(tiny_config(epochs=2, evals_per_epoch=2), _dataset())
    history = clf.info_["history"]
    assert [row["epoch"] for row in history] == [0.5, 1.0, 1.5, 2.0]
    assert [row["step"] for row in history] == [7, 14, 21, 28]  # 108 training texts in batches of 8: 14 per epoch


def test_evaluations_per_epoch_are_chosen_by_what_evaluating_costs(tiny_config):
    small_validation = train(tiny_config(epochs=1, evals_per_epoch=None), _dataset())  # 12 of 120 texts
    assert [row["epoch"] for row in small_validation.info_["history"]] == [0.5, 1.0]
    large_validation = train(tiny_config(epochs=1, evals_per_epoch=None, val_size=0.5), _dataset())
    assert [row["epoch"] for row in large_validation.info_["history"]] == [1.0]
