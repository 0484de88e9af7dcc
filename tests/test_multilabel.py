"""Multi-label classification end to end: label sets in data, metrics, per-label thresholds, training, prediction of
label sets, the CLI, the server, baselines and the ONNX export."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import FILLERS, NEGATIVE, POSITIVE, TINY_TRAINING, write_csv
from typer.testing import CliRunner

from bertfit import ConfigError, DataError, TextClassifier, TextDataset, TrainConfig, evaluate, load_data, train
from bertfit.cli import app
from bertfit.data import check_validation, train_val_split
from bertfit.decision import multi_hot
from bertfit.metrics import collapse_warning, compute_metrics, multi_label_metrics, tune_thresholds
from bertfit.predict import BatchPredictor

SPAM = "free prize call now win winner cash claim".split()
SETS = [(), ("pos",), ("neg",), ("spam",), ("pos", "spam"), ("neg", "spam")]
WORDS = {"pos": POSITIVE, "neg": NEGATIVE, "spam": SPAM}
# The tiny model learns the label sets below in 5 epochs at this rate (micro-F1 0.76 to 0.84 on seeds 42, 1, 2;
# at 1e-2 it stayed at the label priors for one seed of three, at 2e-2 for two).
ML_TRAINING = {**TINY_TRAINING, "epochs": 5, "learning_rate": 5e-3}


def label_set_rows(n: int = 240, seed: int = 0) -> list[tuple[str, tuple[str, ...]]]:
    """Texts holding one word per label of their set: a sentiment word ('pos'/'neg') and/or a spam word; a sixth of
    them hold neither and carry no label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        labels = SETS[i % len(SETS)]
        words = [rng.choice(WORDS[label]) for label in labels]
        rows.append((" ".join([rng.choice(FILLERS), *words]), labels))
    return rows


def _dataset(n: int = 240, seed: int = 0) -> TextDataset:
    rows = label_set_rows(n, seed)
    return TextDataset([text for text, _ in rows], [list(labels) for _, labels in rows])


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A multi-label model trained once for this module: (in-memory classifier, saved directory)."""
    out = tmp_path_factory.mktemp("multilabel") / "model"
    config = TrainConfig(model_name_or_path=str(tiny_model_dir), output_dir=str(out), **ML_TRAINING)
    # 60 validation texts: every label has the 10 positives its threshold is tuned on.
    return train(config, _dataset(200), _dataset(60, seed=1)), out


# -- data ----------------------------------------------------------------------------------------------------------


def test_label_sep_strings_and_list_cells_read_as_label_sets(tmp_path):
    path = write_csv(
        tmp_path / "d.csv", [("a", "love; joy"), ("b", "joy"), ("c", ""), ("d", "joy;joy")], ("text", "labels")
    )
    ds = load_data(path, label_column="labels", label_sep=";")
    assert ds.multi_label and ds.labels == [("joy", "love"), ("joy",), (), ("joy",)]  # empty: a text with no label
    assert ds.classes == ["joy", "love"] and ds.label_counts() == {"joy": 3, "love": 1}
    frame = pd.DataFrame({"text": ["a", "b", "c"], "labels": [["love", "joy"], ["joy"], []]})
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):  # list cells are multi-label without --label-sep
        assert load_data(tmp_path / name, label_column="labels").labels == [("joy", "love"), ("joy",), ()]
    with pytest.raises(DataError, match="no value in label column"):  # without --label-sep: one label per cell
        load_data(path, label_column="labels")


def test_dataset_canonical_sets_fingerprint_and_errors():
    ds = TextDataset(["a", "b"], [["10", "2", "2"], {"2"}])
    assert ds.labels == [("2", "10"), ("2",)]  # distinct, in label order (numeric for integer labels)
    assert ds.fingerprint() == TextDataset(["a", "b"], [("10", "2"), ["2"]]).fingerprint()
    assert ds.fingerprint() != TextDataset(["a", "b"], [("2",), ("2", "10")]).fingerprint()
    assert TextDataset(["a"], ["joy;love"]).as_multi_label(";").labels == [("joy", "love")]
    with pytest.raises(DataError, match="mixes single labels"):
        TextDataset(["a", "b"], [["joy"], "love"])


def test_split_stratifies_by_rarest_label_and_keeps_every_validation_label_in_train(caplog):
    rows = [(f"text {i}", ("common",) if i % 10 else ("common", "rare")) for i in range(200)]
    ds = TextDataset([t for t, _ in rows], [list(labels) for _, labels in rows])
    train_part, val = train_val_split(ds, 0.1, 0)
    assert val.label_counts() == {"common": 20, "rare": 2}  # 10% of each stratum: rare rows exactly in proportion
    assert train_part.label_counts() == {"common": 180, "rare": 18}
    tiny = TextDataset(list("abcdef"), [["x"], ["x", "y"], [], ["y"], ["z"], ["x"]])
    with caplog.at_level("INFO", logger="bertfit"):
        small_train, small_val = train_val_split(tiny, 0.3, 0)
    assert "at random" in caplog.text  # too few rows to stratify
    assert set(small_val.classes) <= set(small_train.classes)  # z (one row) is never validation-only
    check_validation(small_train, small_val)
    with pytest.raises(DataError, match=r"validation labels \['w'\]"):
        check_validation(small_train, TextDataset(["q"], [["x", "w"]]))


# -- metrics and thresholds ----------------------------------------------------------------------------------------


def test_metrics_on_a_hand_made_example():
    y_true = [["a", "b"], ["b"], [], ["a", "c"]]
    y_pred = [["a"], ["b"], ["c"], ["a", "c"]]
    m = compute_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["subset_accuracy"] == m["accuracy"] == 0.5  # rows 1 and 3 exactly right
    assert m["hamming_loss"] == pytest.approx(2 / 12)  # b missed in row 0, c extra in row 2
    assert m["micro_precision"] == m["micro_recall"] == m["micro_f1"] == pytest.approx(0.8)  # TP 4, FP 1, FN 1
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 1 + 2 * 2 / 3 + 1 * 2 / 3) / 5)
    assert m["samples_f1"] == pytest.approx((2 / 3 + 1 + 0 + 1) / 4)
    assert m["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert "confusion_matrix" not in m and "mcc" not in m
    matrix = multi_label_metrics(np.array([[1, 1, 0]]), np.array([[1, 0, 0]]), ["a", "b", "c"])
    assert matrix == compute_metrics([["a", "b"]], [["a"]], ["a", "b", "c"])


def test_per_label_thresholds_find_the_best_f1():
    # a: ranked 0.9 T, 0.8 T, 0.6 F, 0.4 T, 0.3 F, 0.1 F -> F1 is best (6/7) calling the top 4 positive.
    # b: no positive text -> keeps 0.5. c: perfectly separated at a low score.
    truth = np.array([[1, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1], [0, 0, 0]])
    probs = np.array(
        [[0.9, 0.2, 0.1], [0.8, 0.7, 0.05], [0.6, 0.1, 0.0], [0.4, 0.3, 0.2], [0.3, 0.6, 0.15], [0.1, 0.2, 0.1]]
    )
    thresholds, values = tune_thresholds(truth, probs, ["a", "b", "c"], min_positives=2)
    assert thresholds == pytest.approx({"a": 0.35, "b": 0.5, "c": 0.125})
    assert values == pytest.approx({"a": 6 / 7, "c": 1.0})
    # By default a label needs 10 positive texts: a threshold fitted to 2 or 3 is noise.
    assert tune_thresholds(truth, probs, ["a", "b", "c"]) == ({"a": 0.5, "b": 0.5, "c": 0.5}, {})


def test_collapse_warning_for_a_model_that_predicts_no_label():
    truth = [("a",), ("b",), ("a", "b"), ()] * 25
    assert "predicts no label at all for 99.0%" in collapse_warning(truth, [()] * 99 + [("a",)])
    assert collapse_warning(truth, [("a",)] * 50 + [()] * 50) is None


# -- training and prediction ---------------------------------------------------------------------------------------


def test_round_trip_train_save_load_predict_sets(trained):
    from scipy.special import expit
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    clf, out = trained
    texts = ["the film was superb cash", "this movie is awful", "it was quite", "the plot is really winner"]
    assert clf.multi_label and clf.labels == ["neg", "pos", "spam"]
    assert clf.metrics["micro_f1"] >= 0.65  # it learned the sets: every label for every text scores 0.56
    assert json.loads((out / "config.json").read_text())["problem_type"] == "multi_label_classification"
    loaded = TextClassifier.from_pretrained(out)
    predicted = loaded.predict(texts)
    assert predicted == clf.predict(texts)
    assert all(isinstance(row, list) and set(row) <= set(clf.labels) for row in predicted)
    assert loaded.predict(texts[0]) == predicted[0]  # one string: one list
    assert BatchPredictor(out)(pd.DataFrame({"text": texts}))["labels"].tolist() == predicted
    assert loaded.thresholds == pytest.approx(clf.info_["thresholds"]) and set(loaded.thresholds) == set(clf.labels)
    # predict_proba is the sigmoid of the raw logits of the saved model, as plain transformers computes them, divided
    # by the temperature fitted on the 60 validation texts.
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    encoded = AutoTokenizer.from_pretrained(out)(texts, padding=True, return_tensors="pt")
    logits = model(**encoded).logits.detach().numpy()
    temperature = json.loads((out / "bertfit.json").read_text())["temperature"]
    assert temperature == loaded.decision.temperature and temperature > 0
    np.testing.assert_allclose(loaded.predict_proba(texts), expit(logits / temperature), atol=1e-5)
    # No label reaches its threshold: the prediction is the empty set, not the most probable label. (Above every
    # probability: with a temperature below 1 a sigmoid can round to exactly 1.0, which a threshold of 1 takes.)
    above = float(loaded.predict_proba(texts).max()) + 1e-6
    loaded.card_ = loaded.card.with_decision(replace(loaded.decision, thresholds=dict.fromkeys(loaded.labels, above)))
    assert loaded.predict(texts) == [[], [], [], []]


def test_training_records_thresholds_metrics_and_report(trained, tmp_path):
    clf, out = trained
    info = json.loads((out / "bertfit.json").read_text())
    assert info["multi_label"] is True and info["positive_label"] is None
    assert set(info["thresholds"]) == {"neg", "pos", "spam"}
    assert set(info["threshold_tuning"]["at_0.5"]) == {
        "accuracy",
        "micro_f1",
        "macro_f1",
        "samples_f1",
        "hamming_loss",
    }
    assert {"micro_f1", "macro_f1", "hamming_loss"} <= set(info["history"][0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {
        "accuracy",
        "subset_accuracy",
        "hamming_loss",
        "micro_precision",
        "micro_recall",
        "micro_f1",
        "macro_f1",
        "weighted_f1",
        "samples_f1",
        "per_class",
    }
    record = json.loads((out / "validation_predictions.jsonl").read_text().splitlines()[0])
    assert set(record) == {"text", "true_labels", "labels", "prob_neg", "prob_pos", "prob_spam"}
    page = (out / "report.html").read_text()
    assert "Per-label precision, recall, F1 and threshold" in page and 'id="confusion"' not in page
    assert "Hamming loss" in page
    data = write_csv(tmp_path / "val.csv", [(t, ";".join(labels)) for t, labels in label_set_rows(30, seed=4)])
    result = run("report", out, "--data", data, "--label-sep", ";", "--output", tmp_path / "again.html")
    assert result.exit_code == 0, result.output
    assert f"scores on {data}" in (tmp_path / "again.html").read_text()


def test_threshold_metric_none_keeps_half_and_mcc_is_refused(tiny_config):
    clf = train(tiny_config(epochs=1, threshold_metric="none"), _dataset(60))
    assert "thresholds" not in clf.info_ and set(clf.thresholds.values()) == {0.5}
    with pytest.raises(ConfigError, match="not computed for multi-label tasks"):
        train(tiny_config(metric_for_best_model="mcc"), _dataset(60))


def test_head_bias_starts_at_the_label_log_odds(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    from bertfit.trainer import class_weight_vector, init_prior_bias

    rows = [("a",), ("a", "b"), ("a",), ()]
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    init_prior_bias(model, rows, ["a", "b"])
    assert model.classifier.bias.tolist() == pytest.approx([np.log(3), np.log(1 / 3)])  # P(a) = 3/4, P(b) = 1/4
    init_prior_bias(model, rows, ["a", "b"], class_weight_vector("balanced", rows, ["a", "b"]))
    assert model.classifier.bias.tolist() == pytest.approx([0.0, 0.0])  # balanced weights: both classes weigh half


def test_balanced_class_weights_become_bce_pos_weight(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from bertfit.trainer import class_weight_vector, loss_fn

    rows = [("a",), ("a", "b"), ("a",), ()]
    assert class_weight_vector("balanced", rows, ["a", "b"]) == [1 / 3, 3.0]  # negatives / positives
    assert class_weight_vector("balanced", [("a",)] * 500 + [("b",)], ["a", "b"])[1] == 100.0  # capped
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, problem_type="multi_label_classification"
    ).eval()
    inputs = dict(tokenizer(["good film", "bad plot"], padding=True, return_tensors="pt"))
    inputs["labels"] = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    with torch.no_grad():
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        loss = float(loss_fn(logits, inputs["labels"], torch.tensor([1.0, 4.0]), multi_label=True))
    log_p, log_not_p = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    y, w = inputs["labels"], torch.tensor([1.0, 4.0])
    assert loss == pytest.approx(float(-(w * y * log_p + (1 - y) * log_not_p).mean()), rel=1e-5)


def test_evaluate_takes_label_sets_and_refuses_mismatches(trained):
    clf, _ = trained
    val = _dataset(30, seed=3)
    metrics = evaluate(clf, val)
    assert metrics["micro_f1"] >= 0.6 and "hamming_loss" in metrics
    assert evaluate(clf, TextDataset(["it was quite superb"], ["pos"]))["subset_accuracy"] in (0.0, 1.0)
    with pytest.raises(DataError, match=r"labels \['joy'\].*--label-sep"):
        evaluate(clf, TextDataset(["a"], [["joy"]]))
    with pytest.raises(DataError, match="several labels per text but this model predicts one"):
        single = clf.card.with_decision(replace(clf.decision, multi_label=False))
        evaluate(TextClassifier._from_trained(clf.model_, clf.tokenizer_, single), val)


# -- CLI, server, baselines, export --------------------------------------------------------------------------------


def test_cli_train_predict_and_evaluate_with_label_sep(tiny_model_dir, tmp_path):
    rows = [(text, ";".join(labels)) for text, labels in label_set_rows()]
    data = write_csv(tmp_path / "train.csv", rows, ("text", "labels"))
    out = tmp_path / "model"
    flags = ["--model", tiny_model_dir, "--epochs", "1", "--batch-size", "8", "--lr", "1e-2", "--precision", "fp32"]
    result = run("train", "--data", data, "--label-column", "labels", "--label-sep", ";", "--output-dir", out, *flags)
    assert result.exit_code == 0, result.output
    assert "micro_f1" in result.stdout and "decision thresholds per label" in result.stdout
    assert "hamming_loss" in result.stdout and "confusion matrix" not in result.stdout

    texts = ["the film was superb cash", "it was quite", "the plot is really awful"]
    write_csv(tmp_path / "in.csv", [(t,) for t in texts], ("text",))
    result = run("predict", out, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    expected = TextClassifier.from_pretrained(out).predict(texts)
    assert list(written[0]) == ["text", "labels", "prob_neg", "prob_pos", "prob_spam"]
    assert [row["labels"] for row in written] == [";".join(labels) for labels in expected]
    result = run("predict", out, "--input", tmp_path / "in.csv", "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["labels"] for line in lines] == expected

    result = run("predict", out, texts[0])
    assert result.exit_code == 0 and result.stdout.split("\t")[0] == ";".join(expected[0])

    result = run("evaluate", out, "--data", data, "--label-column", "labels", "--label-sep", ";", "--json")
    assert result.exit_code == 0, result.output
    assert {"subset_accuracy", "hamming_loss", "micro_f1"} <= set(json.loads(result.stdout))
    result = run("evaluate", out, "--data", data, "--label-column", "labels")
    assert result.exit_code == 3 and "pass --label-sep" in result.output  # empty cells: no labels, or missing ones?


def test_server_returns_label_sets(trained):
    from test_serve import running

    from bertfit.serve import create_app

    httpx = pytest.importorskip("httpx")
    clf, _ = trained
    texts = ["the film was superb cash", "it was quite"]
    with running(create_app(clf)) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": texts}).json()["predictions"]
        info = httpx.get(f"{base}/info").json()
    assert [p["labels"] for p in predictions] == clf.predict(texts)
    assert all("label" not in p and "score" not in p for p in predictions)
    np.testing.assert_allclose([list(p["probabilities"].values()) for p in predictions], clf.predict_proba(texts))
    assert info["multi_label"] is True and set(info["thresholds"]) == set(clf.labels)


def test_baselines_report_the_metric_keys_of_fine_tuning(trained, tiny_model_dir):
    from bertfit.baseline import format_baselines, run_baselines

    clf, _ = trained
    train_part, val = train_val_split(_dataset(), 0.25, 0)
    results = run_baselines(train_part, val, model_name_or_path=str(tiny_model_dir), max_length=16)
    for result in results.values():
        assert result["metrics"].keys() == clf.metrics.keys()
    assert results["tfidf_logreg"]["metrics"]["micro_f1"] >= 0.9  # one word per label: easy for TF-IDF
    assert results["majority_class"]["metrics"]["subset_accuracy"] == pytest.approx(1 / 6, abs=0.05)
    assert "probability 0.5" in format_baselines(results, multi_label=True)


def test_onnx_export_predicts_the_same_sets(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from bertfit.export import export_onnx
    from bertfit.model import load_classifier

    clf, out = trained
    result = export_onnx(out, tmp_path / "onnx")
    assert result["label_agreement"] == 1.0 and result["accuracy_onnx"] == result["accuracy_pytorch"]
    exported = load_classifier(tmp_path / "onnx")
    texts = ["the film was superb cash", "it was quite", "the plot is really awful"]
    assert exported.multi_label and exported.predict(texts) == clf.predict(texts)
    np.testing.assert_allclose(exported.predict_proba(texts), clf.predict_proba(texts), atol=1e-4)


def test_multi_label_long_texts_in_chunk_mode(tiny_model_dir, tmp_path):
    # Long texts whose label words sit after the first window: chunk mode trains every window on the text's label set
    # and scores a text from the mean of its windows' logits, then a sigmoid per label.
    def long_sets(n, seed):
        padding = " ".join(["it was a film"] * 3)
        return TextDataset(
            [f"{padding} {text}" for text, _ in label_set_rows(n, seed)], [list(s) for _, s in label_set_rows(n, seed)]
        )

    config = TrainConfig(
        model_name_or_path=str(tiny_model_dir),
        output_dir=str(tmp_path / "m"),
        long_text="chunk",
        max_length=16,
        stride=4,
        **ML_TRAINING,
    )
    clf = train(config, long_sets(200, 0), long_sets(60, 1))
    info = clf.info_
    assert info["multi_label"] and info["long_text"]["mode"] == "chunk"
    assert info["long_text"]["validation_windows"] > 60  # several windows per text...
    assert len(clf.validation_predictions_) == 60  # ...but metrics and predictions per text
    # The per-epoch metrics aggregate the Trainer's window logits per text: the best epoch's micro-F1 is that of the
    # restored model's predictions at 0.5 (a misaligned window -> text mapping would score otherwise).
    val = long_sets(60, 1)
    at_half = multi_label_metrics(
        multi_hot(val.labels, clf.labels).astype(bool), clf.predict_proba(val.texts) >= 0.5, clf.labels
    )
    best = next(row for row in info["history"] if row["epoch"] == info["best"]["epoch"])
    assert best["micro_f1"] == pytest.approx(at_half["micro_f1"]) and best["micro_f1"] > 0.4
    loaded = TextClassifier.from_pretrained(tmp_path / "m")
    texts = long_sets(12, 5).texts
    np.testing.assert_array_equal(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert all(isinstance(row, list) for row in loaded.predict(texts))
