"""Baselines: the same metric keys as fine-tuning, sensible scores, and the CLI command."""

from __future__ import annotations

import json

import pytest
from conftest import sentiment_rows, write_csv
from typer.testing import CliRunner

from bertfit.baseline import BASELINES, run_baselines
from bertfit.cli import app
from bertfit.data import TextDataset, train_val_split
from bertfit.exceptions import ConfigError, DataError
from bertfit.metrics import compute_metrics


def _dataset(rows) -> TextDataset:
    return TextDataset([text for text, _ in rows], [label for _, label in rows])


@pytest.fixture(scope="module")
def split() -> tuple[TextDataset, TextDataset]:
    return train_val_split(_dataset(sentiment_rows(200)), 0.25, 0)


@pytest.fixture(scope="module")
def results(split, tiny_model_dir):
    return run_baselines(*split, model_name_or_path=str(tiny_model_dir))


def test_every_baseline_has_the_metric_keys_of_fine_tuning(results, split):
    _, val = split
    # What training reports for a binary task: compute_metrics with the minority label as positive class.
    expected = compute_metrics(val.labels, val.labels, ["neg", "pos"], "pos").keys()
    assert list(results) == list(BASELINES)
    for name, result in results.items():
        assert set(result) == {"metrics", "seconds"}, name
        assert result["metrics"].keys() == expected, name
        assert result["seconds"] >= 0


def test_tfidf_learns_the_sentiment_data(results):
    assert results["tfidf_logreg"]["metrics"]["accuracy"] >= 0.9


def test_majority_class_accuracy_is_the_majority_share(tiny_model_dir):
    rows = sentiment_rows(90)
    train = _dataset(rows[:60] + [("the film was good", "pos")] * 10)  # pos is the training majority
    val = _dataset(rows[60:])
    metrics = run_baselines(train, val, model_name_or_path=str(tiny_model_dir), positive_label="pos", max_length=16)
    share = val.labels.count("pos") / len(val)
    assert metrics["majority_class"]["metrics"]["accuracy"] == pytest.approx(share)


def test_three_classes_have_no_binary_keys(tiny_model_dir):
    rows = sentiment_rows(60) + [(f"call now to win cash prize {i}", "spam") for i in range(30)]
    train, val = train_val_split(_dataset(rows), 0.3, 0)
    results = run_baselines(train, val, model_name_or_path=str(tiny_model_dir))
    expected = compute_metrics(val.labels, val.labels, ["neg", "pos", "spam"]).keys()
    assert all(r["metrics"].keys() == expected for r in results.values())
    assert "positive_label" not in expected


def test_bad_inputs_raise_documented_errors(split, tiny_model_dir):
    train, val = split
    with pytest.raises(ConfigError, match="--positive-label"):
        run_baselines(train, val, model_name_or_path=str(tiny_model_dir), positive_label="maybe")
    with pytest.raises(DataError, match="do not occur in the training data"):
        run_baselines(train, TextDataset(["odd"], ["other"]), model_name_or_path=str(tiny_model_dir))
    with pytest.raises(DataError, match="single class"):
        run_baselines(TextDataset(["a", "b"], ["x", "x"]), val, model_name_or_path=str(tiny_model_dir))


def test_cli_prints_the_table_and_json(sentiment_csv, tiny_model_dir):
    runner = CliRunner()
    args = ["baseline", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--val-size", "0.25"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in BASELINES:
        assert name in result.output
    assert "macro-F1" in result.output and "F1 'pos'" in result.output
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)) == set(BASELINES)


def test_cli_validation_file(tmp_path, tiny_model_dir):
    rows = sentiment_rows(100)
    train, val = write_csv(tmp_path / "train.csv", rows[:80]), write_csv(tmp_path / "val.csv", rows[80:])
    args = ["baseline", "--data", str(train), "--validation", str(val), "--model", str(tiny_model_dir), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["majority_class"]["metrics"]["per_class"]["pos"]["support"] == 10


def test_cli_bad_file_exits_3(tmp_path, tiny_model_dir):
    bad = write_csv(tmp_path / "bad.csv", [("x", "y")], header=("body", "target"))
    result = CliRunner().invoke(app, ["baseline", "--data", str(bad), "--model", str(tiny_model_dir)])
    assert result.exit_code == 3
    assert "DataError:" in result.output


@pytest.mark.parametrize("auto", ["bf16", "fp32"])
def test_frozen_embeddings_run_a_bf16_copy_where_auto_is_bf16(tiny_model_dir, monkeypatch, auto):
    import numpy as np
    import torch

    from bertfit import baseline
    from bertfit.backbone import load_sequence_classifier, load_tokenizer
    from bertfit.hardware import Precision
    from bertfit.inference import torch_embeddings

    model = load_sequence_classifier(str(tiny_model_dir), num_labels=2).train()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [text for text, _ in sentiment_rows(30)]
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    calls = []

    def recording(encoder, *args, autocast=True, **kwargs):
        calls.append((next(encoder.parameters()).dtype, autocast))
        return torch_embeddings(encoder, *args, autocast=autocast, **kwargs)

    monkeypatch.setattr(baseline, "torch_embeddings", recording)
    monkeypatch.setattr(baseline, "resolve_precision", lambda requested: Precision(auto, "cpu"))  # either CPU
    train, validation, _ = baseline.frozen_embeddings(model, tokenizer, texts, texts[:5], 16, 8)
    assert calls == ([(torch.bfloat16, False)] * 2 if auto == "bf16" else [(torch.float32, True)] * 2)
    for name, tensor in model.state_dict().items():  # the model itself is untouched, and back in training mode
        assert tensor.dtype == before[name].dtype and torch.equal(tensor, before[name]), name
    assert model.training
    exact = torch_embeddings(model.base_model.eval(), tokenizer, texts, 16, Precision("fp32", "cpu"), 8)
    assert train.dtype == np.float32 and train.shape == exact.shape
    scale = np.abs(exact).max()
    assert np.abs(train - exact).max() < 0.03 * scale  # bf16 keeps about 3 significant digits
    assert np.array_equal(validation, train[:5]) or np.abs(validation - train[:5]).max() < 0.03 * scale
