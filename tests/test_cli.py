from __future__ import annotations

import csv
import json

import pytest
from conftest import sentiment_rows, write_csv
from typer.testing import CliRunner

from bertfit import __version__
from bertfit.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _fast_flags(tiny_model_dir) -> list[str]:
    return [
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "5",
        "--batch-size",
        "8",
        "--lr",
        "5e-3",
        "--precision",
        "fp32",
    ]


def test_version_and_help():
    assert run("--version").stdout.strip() == f"bertfit {__version__}"
    result = run("train", "--help")
    assert result.exit_code == 0
    assert "--val-size" in result.stdout and "Share of the training file held out for validation" in result.stdout
    assert "[default: 0.1]" in result.stdout and "[default: bertfit-model]" in result.stdout


def test_train_evaluate_predict_end_to_end(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "model"
    result = run("train", "--data", sentiment_csv, "--output-dir", out, *_fast_flags(tiny_model_dir))
    assert result.exit_code == 0, result.output
    assert "train_loss" in result.stdout and "Final metrics on 12 validation texts" in result.stdout
    assert "positive class 'pos'" in result.stdout
    assert "Against baselines on the same validation texts" in result.stdout
    table = result.stdout[result.stdout.index("Against baselines") :]
    assert all(name in table for name in ("fine-tuned (this model)", "majority_class", "tfidf_logreg"))
    assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.9

    result = run("evaluate", out, "--data", sentiment_csv, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["positive_label"] == "pos" and metrics["accuracy"] >= 0.9

    result = run("predict", out, "the film was superb", "the plot is really awful")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert [(line[0], line[2]) for line in lines] == [
        ("pos", "the film was superb"),
        ("neg", "the plot is really awful"),
    ]

    predictions = tmp_path / "pred.csv"
    result = run("predict", out, "--input", sentiment_csv, "--output", predictions)
    assert result.exit_code == 0, result.output
    with open(predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["text", "label", "score", "prob_neg", "prob_pos"]
    assert [r["text"] for r in rows] == [t for t, _ in sentiment_rows()]
    assert float(rows[0]["score"]) == max(float(rows[0]["prob_neg"]), float(rows[0]["prob_pos"]))

    jsonl = tmp_path / "pred.jsonl"
    assert run("predict", out, "--input", sentiment_csv, "--output", jsonl).exit_code == 0
    assert len(jsonl.read_text().splitlines()) == 120
    assert run("predict", out, "--input", sentiment_csv, "--output", jsonl).exit_code == 3  # exists, no --overwrite
    before = sentiment_csv.read_bytes()
    result = run("predict", out, "--input", sentiment_csv, "--output", sentiment_csv, "--overwrite")
    _expect_error(result, "OutputExistsError", "is the --input file")
    assert sentiment_csv.read_bytes() == before


def test_config_file_and_flags_win(tiny_model_dir, sentiment_csv, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model_dir}\nepochs: 1\nbatch_size: 8\nlearning_rate: 5.0e-3\n"
        "precision: fp32\nseed: 3\n"
    )
    out = tmp_path / "model"
    result = run("train", "--data", sentiment_csv, "--config", config, "--epochs", "2", "--output-dir", out)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "bertfit.json").read_text())["config"]
    assert (saved["epochs"], saved["seed"], saved["batch_size"]) == (2, 3, 8)


def _expect_error(result, name: str, message: str) -> None:
    assert result.exit_code == 3, result.output
    assert f"{name}: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (None, "DataError", "does not exist"),
        (b"", "DataError", "is empty"),
        (b"body,target\nx,y\n", "DataError", "found ['body', 'target']; pass --text-column/--label-column"),
        (b"text,label\n,pos\n ,neg\n", "DataError", "every row"),
        (b"text,label\ngood,pos\nbad,\n", "DataError", "no value in label column 'label' (data rows 2)"),
        (b"text,label\ngood,pos\nbad,pos\n", "DataError", "single class ['pos']"),
        (b"text,label\na,x\nb,x\nc,x\nd,y\n", "DataError", "class(es) ['y']"),
        (b"text,label\ncaf\xe9,x\n", "DataError", "--encoding latin-1"),
    ],
)
def test_bad_training_data(tiny_model_dir, tmp_path, content, name, message):
    path = tmp_path / "train.csv"
    if content is not None:
        path.write_bytes(content)
    result = run("train", "--data", path, "--output-dir", tmp_path / "out", *_fast_flags(tiny_model_dir))
    _expect_error(result, name, message)
    assert not (tmp_path / "out").exists()


def test_unknown_format_and_unseen_validation_labels(tiny_model_dir, sentiment_csv, tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    _expect_error(run("train", "--data", tmp_path / "d.xlsx"), "DataError", "unknown format")
    val = write_csv(tmp_path / "val.csv", [("good", "pos"), ("meh", "neutral")])
    result = run("train", "--data", sentiment_csv, "--validation", val, *_fast_flags(tiny_model_dir))
    _expect_error(result, "DataError", "validation labels ['neutral'] do not occur")


def test_existing_output_is_refused_and_untouched(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    result = run("train", "--data", sentiment_csv, "--output-dir", out, *_fast_flags(tiny_model_dir))
    _expect_error(result, "OutputExistsError", "pass --overwrite")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_bad_options_and_model(tmp_path, sentiment_csv):
    _expect_error(run("train", "--data", sentiment_csv, "--lr", "5"), "ConfigError", "learning_rate must be")
    _expect_error(run("train", "--data", sentiment_csv, "--model", tmp_path), "ModelError", "could not load model")
    _expect_error(run("evaluate", tmp_path / "nope", "--data", sentiment_csv), "ModelError", "does not exist")
    _expect_error(run("predict", tmp_path), "ConfigError", "give texts as arguments")
    _expect_error(
        run("train", "--data", sentiment_csv, "--class-weights", '{"spam": 3}', "--model", tmp_path / "nope"),
        "ConfigError",
        "class_weights name labels ['spam']",
    )


def _boom(*args, **kwargs):
    raise RuntimeError("index 66 is out of bounds for dimension 1 with size 66\nsecond line")


def test_an_internal_error_is_one_line_with_the_traceback_in_a_log(trained_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("bertfit.model.load_classifier", _boom)
    log = tmp_path / "bertfit.log"
    result = runner.invoke(app, ["predict", str(trained_dir), "good"], env={"BERTFIT_LOG": str(log)})
    assert result.exit_code == 1
    assert result.stderr == (
        f"InternalError: RuntimeError: index 66 is out of bounds for dimension 1 with size 66 (the traceback is in "
        f"{log})\n"
    )
    assert "Traceback (most recent call last)" in log.read_text() and "in _boom" in log.read_text()

    result = runner.invoke(app, ["--verbose", "predict", str(trained_dir), "good"], env={"BERTFIT_LOG": str(log)})
    assert result.exit_code == 1 and "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("InternalError: RuntimeError: index 66")
    assert log.read_text().count("Traceback (most recent call last)") == 2  # appended

    # Without $BERTFIT_LOG: a file of its own under ~/.cache/bertfit/logs.
    result = runner.invoke(app, ["predict", str(trained_dir), "good"], env={"HOME": str(tmp_path), "BERTFIT_LOG": ""})
    (written,) = (tmp_path / ".cache" / "bertfit" / "logs").glob("bertfit-*.log")
    assert result.exit_code == 1 and f"(the traceback is in {written})" in result.stderr


def test_bertfit_errors_keep_their_exit_codes(trained_dir, monkeypatch):
    from bertfit.exceptions import ModelError, TrainingInterrupted

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("stopped by SIGTERM at step 3", exit_code=143)

    monkeypatch.setattr("bertfit.model.load_classifier", interrupted)
    result = run("predict", trained_dir, "good")
    assert result.exit_code == 143 and result.stderr == "TrainingInterrupted: stopped by SIGTERM at step 3\n"

    def missing(*args, **kwargs):
        raise ModelError("no such model")

    monkeypatch.setattr("bertfit.model.load_classifier", missing)
    assert run("--verbose", "predict", trained_dir, "good").stderr == "ModelError: no such model\n"


def test_log_level_option(trained_dir, sentiment_csv, tmp_path):
    out = tmp_path / "out.csv"
    result = run("--log-level", "debug", "predict", trained_dir, "--input", sentiment_csv, "--output", out)
    assert result.exit_code == 0 and "predicted 120 rows" in result.stderr
    result = run(
        "--log-level", "warning", "predict", trained_dir, "--input", sentiment_csv, "--output", out, "--overwrite"
    )
    assert result.exit_code == 0 and "predicted 120 rows" not in result.stderr
    result = run("--log-level", "loud", "predict", trained_dir, "good")
    assert result.exit_code == 2 and "loud" in result.output


def _piped(*args, stdin: str):
    return runner.invoke(app, [str(a) for a in args], input=stdin, env={"COLUMNS": "200"})


def test_predict_reads_stdin_and_writes_stdout_in_order(trained_dir, sentiment_csv):
    # More lines than a stdin chunk (256), of lengths that sort differently: rows must still come out in input order.
    texts = [("the film was very " * (i % 7)) + ("superb" if i % 2 else "awful") for i in range(600)]
    result = _piped("predict", trained_dir, "-", stdin="\n".join(texts) + "\n")
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[2] for line in lines] == texts and {line[0] for line in lines} <= {"pos", "neg"}

    jsonl = "".join(json.dumps({"text": text, "id": i}) + "\n" for i, text in enumerate(texts[:5]))
    result = _piped("predict", trained_dir, "--input", "-", stdin=jsonl)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert list(rows[0]) == ["text", "label", "score", "prob_neg", "prob_pos"]
    assert [row["text"] for row in rows] == texts[:5]

    result = _piped("predict", trained_dir, "-", "--json", stdin="the film was superb\n\nthe plot is really awful\n")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["text"] for row in rows] == ["the film was superb", "", "the plot is really awful"]
    assert set(rows[0]) == {"text", "label", "score", "prob_neg", "prob_pos"} and rows[0]["label"] == "pos"
    assert rows[0]["score"] == max(rows[0]["prob_neg"], rows[0]["prob_pos"])


def test_predict_input_without_output_writes_stdout(trained_dir, sentiment_csv):
    result = run("predict", trained_dir, "--input", sentiment_csv)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [row["text"] for row in rows] == [text for text, _ in sentiment_rows()]
    for flags in (["--json"], ["--json", "--output", "-"]):
        result = run("predict", trained_dir, "--input", sentiment_csv, *flags)
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == [t for t, _ in sentiment_rows()]
    result = run("predict", trained_dir, "the film was superb", "--json")
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["label"] == "pos" and row["text"] == "the film was superb"


def test_bad_stdin_and_predict_options(trained_dir, tmp_path):
    result = _piped("predict", trained_dir, "-", stdin='{"text": "good"}\nnot json\n')
    _expect_error(result, "DataError", "stdin line 2 is not JSON")
    result = _piped("predict", trained_dir, "-", stdin='{"body": "good"}\n')
    _expect_error(result, "DataError", "stdin line 1 has no 'text' field (found ['body']); pass --text-column")
    result = _piped("predict", trained_dir, "-", "--text-column", "body", stdin='{"body": "good"}\n')
    assert result.exit_code == 0 and result.stdout.endswith("\tgood\n")
    result = runner.invoke(app, ["predict", str(trained_dir), "-"], input=b"caf\xe9\n")
    _expect_error(result, "DataError", "stdin is not valid utf-8")
    _expect_error(run("predict", trained_dir, "good", "--output", tmp_path / "x.csv"), "ConfigError", "--output takes")
    _expect_error(run("predict", trained_dir, "good", "--input", tmp_path / "x.csv"), "ConfigError", "give texts")


def test_help_shows_flags_as_flags_and_documents_exit_codes():
    for command in (["train"], ["predict"], ["export"], ["serve"], []):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        # typer draws its own --help row (with <bool>); every option of bertfit's shows no value after a flag.
        ours = [line for line in result.output.splitlines() if "--help" not in line]
        assert result.exit_code == 0 and not [line for line in ours if "<bool>" in line], command
    assert "--overwrite" in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    assert "3 bad data, options, model or output" in runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output


def test_bad_input_exits_3_and_usage_errors_exit_2(trained_dir, tmp_path):
    assert run("predict", tmp_path / "missing", "good").exit_code == 3  # ModelError
    assert run("predict", trained_dir, "good", "--no-such-flag").exit_code == 2  # click's usage error
    assert run("predict", trained_dir, "good", "--num-workers", "many").exit_code == 2
    result = run("serve", trained_dir, "--port", "99999")  # refused before the model loads or a socket opens
    assert result.exit_code == 2 and "--port" in result.output and "Traceback" not in result.output


def test_serve_on_a_port_in_use_is_refused_before_the_model_loads(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # No model directory at all: the address is checked first.
        result = run("serve", tmp_path / "no-model", "--port", str(port))
    _expect_error(result, "ConfigError", f"cannot listen on 127.0.0.1:{port}")
    assert "another --port" in result.stderr
