from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sentiment_rows, write_csv
from typer.testing import CliRunner

from bertfit import TextClassifier
from bertfit.cli import app
from bertfit.exceptions import ConfigError, OutputExistsError
from bertfit.export import export_onnx
from bertfit.fast_tokenizer import FastTokenizer
from bertfit.model import load_classifier
from bertfit.onnx_model import ONNX_FILE, OnnxClassifier

pytest.importorskip("onnxruntime")

runner = CliRunner()
TEXTS = ["the film was superb", "the plot is really awful", "it was quite boring", "", "a " * 200]


def run(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def fp32_export(trained_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "onnx"
    return out, export_onnx(trained_dir, out)


def test_export_round_trip_matches_pytorch(trained_dir, fp32_export):
    out, result = fp32_export
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "bertfit.json", "config.json", "metrics.json", ONNX_FILE]
        + ["tokenizer.json", "tokenizer_config.json"]
    )
    assert json.loads((out / "bertfit.json").read_text())["export"] == {
        "format": "onnx",
        "quantize": None,
        "opset": 17,
    }
    torch_clf, onnx_clf = TextClassifier.from_pretrained(trained_dir), load_classifier(out)
    assert isinstance(onnx_clf, OnnxClassifier)
    assert isinstance(onnx_clf.tokenizer_, FastTokenizer)  # a BERT export tokenizes without transformers
    assert onnx_clf.labels == torch_clf.labels and onnx_clf.positive_label == "pos"
    assert onnx_clf.metrics == torch_clf.metrics and onnx_clf.max_length == torch_clf.max_length
    # batch sizes 1, 2 and 5: the batch and sequence axes are dynamic
    for batch_size in (1, 2, 128):
        onnx_clf.batch_size = batch_size
        np.testing.assert_allclose(onnx_clf.predict_proba(TEXTS), torch_clf.predict_proba(TEXTS), atol=1e-4)
    assert onnx_clf.predict(TEXTS) == torch_clf.predict(TEXTS)
    assert onnx_clf.predict("the film was superb") == torch_clf.predict("the film was superb")
    assert onnx_clf.predict_proba([]).shape == (0, 2)
    assert result["texts"] == 12 and result["label_agreement"] == 1.0 and result["accuracy_change"] == 0.0
    assert result["max_abs_prob_diff"] < 1e-4


def test_export_holds_the_model_config_for_other_onnx_loaders(trained_dir, fp32_export):
    from transformers import AutoConfig

    out, _ = fp32_export
    config = AutoConfig.from_pretrained(out)
    assert config.id2label == {0: "neg", 1: "pos"} and config.model_type == "bert"
    assert json.loads((out / "config.json").read_text()) == json.loads((trained_dir / "config.json").read_text())


def test_optimum_and_a_pipeline_load_the_export(fp32_export):
    onnxruntime = pytest.importorskip("optimum.onnxruntime")  # optional: optimum is not a dependency
    from transformers import AutoTokenizer, pipeline

    out, _ = fp32_export
    model = onnxruntime.ORTModelForSequenceClassification.from_pretrained(out)
    pipe = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(out))
    expected = load_classifier(out)
    assert [r["label"] for r in pipe(TEXTS[:3])] == [
        expected.labels[k] for k in expected.predict_proba(TEXTS[:3]).argmax(1)
    ]


def test_int8_export_is_smaller_and_reports_agreement(trained_dir, fp32_export, tmp_path):
    result = export_onnx(trained_dir, tmp_path / "int8", quantize="int8")
    assert 0.0 <= result["label_agreement"] <= 1.0
    assert result["accuracy_change"] == pytest.approx(result["accuracy_onnx"] - result["accuracy_pytorch"])
    assert result["onnx_bytes"] < fp32_export[1]["onnx_bytes"]
    assert json.loads((tmp_path / "int8" / "bertfit.json").read_text())["export"]["quantize"] == "int8"
    assert load_classifier(tmp_path / "int8").predict_proba(TEXTS).shape == (len(TEXTS), 2)


def test_export_refuses_bad_input(trained_dir, fp32_export):
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_onnx(trained_dir, fp32_export[0])
    with pytest.raises(ConfigError, match="unknown quantization 'int4'"):
        export_onnx(trained_dir, quantize="int4")


def test_cli_export_predict_evaluate(trained_dir, tmp_path):
    out = tmp_path / "export"
    result = run("export", trained_dir, "--onnx", "--quantize", "int8", "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout and "label agreement" in result.stdout
    assert "accuracy" in result.stdout and "change" in result.stdout

    result = run("export", trained_dir, "--onnx", "--output-dir", out)
    assert result.exit_code == 3 and "OutputExistsError" in result.stderr
    result = run("export", trained_dir, "--output-dir", tmp_path / "other")
    assert result.exit_code == 3 and "--onnx" in result.stderr

    result = run("predict", out, "the film was superb", "the plot is really awful")
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[2] for line in result.stdout.strip().splitlines()] == [
        "the film was superb",
        "the plot is really awful",
    ]

    data = write_csv(tmp_path / "data.csv", sentiment_rows(40, seed=1))
    result = run("evaluate", out, "--data", data, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["positive_label"] == "pos" and 0.0 <= metrics["accuracy"] <= 1.0


def test_onnx_classifier_pickles_for_worker_processes(fp32_export):
    import pickle

    clf = load_classifier(fp32_export[0])
    copy = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(copy.predict_proba(TEXTS), clf.predict_proba(TEXTS))


def test_serve_takes_an_onnx_export(trained_dir, fp32_export, monkeypatch):
    httpx = pytest.importorskip("httpx")
    uvicorn = pytest.importorskip("uvicorn")
    from test_serve import running

    from bertfit.serve import create_app

    out, _ = fp32_export
    with running(create_app(load_classifier(out))) as base:
        predictions = httpx.post(f"{base}/predict", json={"texts": TEXTS[:3]}).json()["predictions"]
        info = httpx.get(f"{base}/info").json()
    assert [p["label"] for p in predictions] == TextClassifier.from_pretrained(trained_dir).predict(TEXTS[:3])
    assert info["labels"] == ["neg", "pos"]
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(app=app))
    result = run("serve", out, "--port", "8124")
    assert result.exit_code == 0, result.output
    assert "/predict" in served["app"].openapi()["paths"]


def test_an_export_carries_the_lexical_head_and_averages_it_in(tiny_config, tmp_path):
    from bertfit import train
    from bertfit.data import TextDataset
    from bertfit.lexical import LEXICAL_FILES

    rows = [("the film was superb and moving", "pos"), ("the plot is really awful", "neg")] * 12
    rows += [("a superb cast", "pos"), ("boring and awful", "neg")] * 6
    model_dir = tmp_path / "model"
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    torch_clf = train(tiny_config(epochs=1, lexical="on", output_dir=str(model_dir)), data)
    assert torch_clf.lexical_ is not None
    export_onnx(model_dir, tmp_path / "onnx")
    assert all((tmp_path / "onnx" / name).is_file() for name in LEXICAL_FILES)
    onnx_clf = load_classifier(tmp_path / "onnx")
    assert onnx_clf.lexical_ is not None
    np.testing.assert_allclose(onnx_clf.predict_proba(TEXTS), torch_clf.predict_proba(TEXTS), atol=1e-4)
    encoder = onnx_clf.decision.probabilities(onnx_clf._logits(TEXTS))
    assert not np.allclose(onnx_clf.predict_proba(TEXTS), encoder)  # the head is averaged in, not only copied
