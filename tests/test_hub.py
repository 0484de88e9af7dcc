"""The Hub model card README.md of model directories and exports, read back with huggingface_hub, and pushing a model
directory: a stand-in HfApi for what is uploaded, a local HTTP server and a closed port for the Hub's failures."""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import threading
from pathlib import Path

import huggingface_hub
import pytest
from conftest import sentiment_rows
from huggingface_hub import ModelCard, metadata_load
from huggingface_hub.utils import filter_repo_objects
from test_multilabel import ML_TRAINING, label_set_rows
from typer.testing import CliRunner

from bertfit import ConfigError, ModelError, TextClassifier, TextDataset, TrainConfig, train
from bertfit.backbone import DEFAULT_MODEL_NAME, default_model_path
from bertfit.card import read_model_files
from bertfit.cli import app
from bertfit.exceptions import HubError
from bertfit.hub import README_FILE, hub_base_model, model_card, push_to_hub

TEXTS = ["the film was superb", "the plot is really awful", "it was quite lovely", "the actor was very sad"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def _fast_flags(tiny_model_dir) -> list[str]:
    flags = ["--model", tiny_model_dir, "--epochs", 5, "--batch-size", 8, "--lr", "5e-3", "--precision", "fp32"]
    return [*flags, "--no-baselines", "--evals-per-epoch", 1]


def _results(card: ModelCard) -> dict[str, object]:
    """The model-index metrics of a card, by display name."""
    return {result.metric_name: result.metric_value for result in card.data.eval_results}


def _label_table(text: str) -> list[tuple[int, str, str]]:
    """The rows (id, label, rule) of the body's label table."""
    section = text[text.index("## Labels") : text.index("## How to use")]
    return [(int(i), label, rule) for i, label, rule in re.findall(r"^\| (\d+) \| (.+?) \| (.+?) \|$", section, re.M)]


@pytest.fixture(scope="module")
def multi_label_dir(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub-multilabel") / "emotions"
    config = TrainConfig(
        model_name_or_path=str(tiny_model_dir), output_dir=str(out), **{**ML_TRAINING, "baselines": True}
    )

    def dataset(n, seed):
        rows = label_set_rows(n, seed)
        return TextDataset([text for text, _ in rows], [list(labels) for _, labels in rows])

    train(config, dataset(200, 0), dataset(60, 1))
    return out


# -- the card --------------------------------------------------------------------------------------------------------


def test_card_front_matter_holds_the_models_labels_metrics_and_task(trained_dir):
    files = read_model_files(trained_dir)
    metrics, card = files.metrics, ModelCard.load(trained_dir / README_FILE)
    meta = metadata_load(trained_dir / README_FILE)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["tags"] == ["bertfit", "text-classification"]
    assert "base_model" not in meta  # trained from a local directory that is not the default model
    assert "datasets" not in meta  # local data: no Hub dataset id
    positive = metrics["positive_label"]
    assert _results(card) == {
        "Accuracy": metrics["accuracy"],
        "Macro F1": metrics["macro_f1"],
        "Micro F1": metrics["micro_f1"],
        "Weighted F1": metrics["weighted_f1"],
        "MCC": metrics["mcc"],
        f"Precision ({positive})": metrics["precision"],
        f"Recall ({positive})": metrics["recall"],
        f"F1 ({positive})": metrics["f1"],
        f"Specificity ({positive})": metrics["specificity"],
    }
    assert card.data.model_name == "model" and meta["model-index"][0]["name"] == "model"
    for result in card.data.eval_results:
        assert (result.task_type, result.dataset_split, result.dataset_name) == (
            "text-classification",
            "validation",
            "in-memory texts",
        )
    by_name = {result.metric_name: result for result in card.data.eval_results}
    assert by_name["Macro F1"].metric_type == "f1" and by_name["Macro F1"].metric_args == {"average": "macro"}
    assert by_name[f"F1 ({positive})"].metric_args == {"pos_label": positive}
    assert meta["metrics"] == sorted({result.metric_type for result in card.data.eval_results})
    assert [label for _, label, _ in _label_table(card.text)] == files.card.labels


def test_card_body_covers_usage_training_data_results_and_baselines(trained_dir):
    text = ModelCard.load(trained_dir / README_FILE).text
    files = read_model_files(trained_dir)
    record = files.card.training
    assert 'bertfit predict model "an example text"' in text
    assert 'pipeline("text-classification", model="model", truncation=True' in text
    assert f"| learning_rate | `{record.config['learning_rate']}` |" in text and "| output_dir |" not in text
    assert f"| train | `in-memory texts` | {record.train_data.rows:,} | `{record.train_data.fingerprint}` |" in text
    for label, count in record.validation_data.label_counts.items():
        assert re.search(rf"^\| {label} \| {record.train_data.label_counts[label]:,} \| {count:,} \|$", text, re.M)
    assert f"| Accuracy | {files.metrics['accuracy']:.4f} |" in text
    assert all(f"| {name} |" in text for name in ["fine-tuned (this model)", *record.baselines])
    assert "## Warnings" in text and "validation_predictions.jsonl" in text


def test_the_cards_pipeline_snippet_runs_and_agrees_with_bertfit(trained_dir):
    text = ModelCard.load(trained_dir / README_FILE).text
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert snippet.count('model="model"') == 1
    namespace: dict = {}
    exec(snippet.replace('model="model"', f"model={str(trained_dir)!r}"), namespace)  # prints one prediction
    clf = TextClassifier.from_pretrained(trained_dir)
    # The pipeline's argmax, which bertfit's argmax matches (the temperature does not move it).
    expected = [clf.labels[k] for k in clf.predict_proba(TEXTS).argmax(1)]
    assert [row["label"] for row in namespace["classifier"](TEXTS)] == expected


def test_multi_label_card(multi_label_dir):
    files = read_model_files(multi_label_dir)
    card, metrics = ModelCard.load(multi_label_dir / README_FILE), files.metrics
    assert card.data.tags == ["bertfit", "text-classification", "multi-label"]
    assert _results(card) == {
        "Subset accuracy": metrics["subset_accuracy"],
        "Micro F1": metrics["micro_f1"],
        "Macro F1": metrics["macro_f1"],
        "Weighted F1": metrics["weighted_f1"],
        "Samples F1": metrics["samples_f1"],
        "Micro precision": metrics["micro_precision"],
        "Micro recall": metrics["micro_recall"],
        "Hamming loss": metrics["hamming_loss"],
    }
    rows = _label_table(card.text)
    assert [label for _, label, _ in rows] == files.card.labels
    cuts = files.card.decision.cuts()
    for i, _, rule in rows:
        assert rule.startswith(f"its probability is at least {cuts[i]:.4f}")
    assert "top_k=None" in card.text and "their threshold in the table above" in card.text
    assert "| subset accuracy | micro-F1 | macro-F1 | Hamming loss | seconds |" in card.text
    assert "| tfidf_logreg |" in card.text


def test_base_model_is_a_hub_id_and_the_default_models_directory_maps_to_its_id(tiny_model_dir, trained_dir):
    default_dir = str(default_model_path())
    assert hub_base_model(default_dir) == DEFAULT_MODEL_NAME
    assert hub_base_model(DEFAULT_MODEL_NAME) == DEFAULT_MODEL_NAME
    assert hub_base_model("bert-base-uncased") == "bert-base-uncased"
    assert hub_base_model(str(tiny_model_dir)) is None
    assert hub_base_model("/no/such/model/dir") is None and hub_base_model(None) is None
    files = read_model_files(trained_dir)
    files.card.base_model = default_dir
    card = model_card(files.card, files.metrics, "spam")
    assert card.data.base_model == DEFAULT_MODEL_NAME
    assert f"[{DEFAULT_MODEL_NAME}](https://huggingface.co/{DEFAULT_MODEL_NAME})" in card.text


def test_export_directory_has_an_onnx_card(trained_dir, tmp_path):
    from bertfit.export import export_onnx

    out = tmp_path / "model-onnx-int8"
    export_onnx(trained_dir, out, quantize="int8")
    card, metrics = ModelCard.load(out / README_FILE), read_model_files(out).metrics
    assert card.data.library_name == "onnx" and "onnx" in card.data.tags
    assert card.data.model_name == "model-onnx-int8"
    assert _results(card)["Accuracy"] == metrics["accuracy"]
    assert "ORTModelForSequenceClassification" in card.text and "int8" in card.text
    assert "validation_predictions.jsonl" not in card.text  # an export holds no validation texts


def test_the_card_is_part_of_the_atomic_write(trained_dir, tmp_path, monkeypatch):
    import bertfit.save

    def fail(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr(bertfit.save, "write_readme", fail)
    clf = TextClassifier.from_pretrained(trained_dir)
    with pytest.raises(RuntimeError, match="card failed"):
        clf.save_pretrained(tmp_path / "copy")
    assert list(tmp_path.iterdir()) == []  # neither the directory nor its staging copy


# -- pushing ---------------------------------------------------------------------------------------------------------


class FakeApi:
    """Stands in for huggingface_hub.HfApi: records the calls, and which files upload_folder would send (the real
    pattern filter of huggingface_hub over the folder's files)."""

    calls: list[tuple[str, dict]] = []

    def __init__(self, token=None, **kwargs):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id if '/' in repo_id else 'me/' + repo_id}")

    def upload_folder(self, *, repo_id, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        sent = sorted(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
        beside = sorted(p.name for p in folder.parent.iterdir())
        FakeApi.calls.append(("upload_folder", {"repo_id": repo_id, "folder": folder, "sent": sent, "beside": beside}))


@pytest.fixture
def fake_hub(monkeypatch):
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    return FakeApi.calls


def _published(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def test_push_uploads_the_model_files_and_no_leftovers(trained_dir, tmp_path, fake_hub):
    model = tmp_path / "sentiment"
    shutil.copytree(trained_dir, model)
    expected = _published(model)
    assert {"model.safetensors", "config.json", "tokenizer_config.json", "bertfit.json", "metrics.json"} <= set(
        expected
    ) and {"README.md", "report.html", "validation_predictions.jsonl"} <= set(expected)
    # Leftovers: a staging copy of an interrupted atomic write, editor and system files.
    (model / ".report.html.tmp-999999-x1").write_text("half")
    (model / ".ipynb_checkpoints").mkdir()
    (model / ".ipynb_checkpoints" / "notes.ipynb").write_text("{}")
    (model / ".DS_Store").write_bytes(b"\0")

    url = push_to_hub(model, "someone/sentiment", private=True)
    assert url == "https://huggingface.co/someone/sentiment"
    (create, args), (upload, sent) = fake_hub
    assert create == "create_repo" and args["repo_id"] == "someone/sentiment"
    assert args["exist_ok"] is True and args["private"] is True and args["repo_type"] == "model"
    assert upload == "upload_folder" and sent["repo_id"] == "someone/sentiment" and sent["folder"] == model
    assert sent["sent"] == expected


def test_push_writes_the_card_of_a_directory_saved_without_one(trained_dir, tmp_path, fake_hub):
    model = tmp_path / "old"
    shutil.copytree(trained_dir, model)
    (model / README_FILE).unlink()
    push_to_hub(model, "old-model")  # a bare name: the token's own account
    assert fake_hub[1][1]["repo_id"] == "me/old-model" and "README.md" in fake_hub[1][1]["sent"]
    assert fake_hub[0][1]["private"] is None  # the account's default visibility
    assert ModelCard.load(model / README_FILE).data.model_name == "old"


def test_push_refuses_bad_input(trained_dir, tmp_path, fake_hub, monkeypatch):
    with pytest.raises(ConfigError, match="not a Hugging Face repository id"):
        push_to_hub(trained_dir, "a/b/c")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ModelError, match="not a model directory written by bertfit"):
        push_to_hub(tmp_path / "plain", "me/plain")
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(HubError, match="no Hugging Face token .* `hf auth login`"):
        push_to_hub(trained_dir, "me/model")
    assert fake_hub == []  # nothing was sent


def test_train_push_to_hub_uploads_the_saved_directory(tiny_model_dir, sentiment_csv, tmp_path, fake_hub):
    out = tmp_path / "spam"
    result = run(
        "train", "--data", sentiment_csv, "--output-dir", out, *_fast_flags(tiny_model_dir), "--push-to-hub",
        "someone/spam", "--hub-private",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (_, created), (_, upload) = fake_hub
    assert created["repo_id"] == "someone/spam" and created["private"] is True
    assert upload["folder"] == out
    assert upload["sent"] == _published(out)
    assert upload["beside"] == ["sentiment.csv", "spam"]  # the checkpoint and the staging copy are gone
    meta = metadata_load(out / README_FILE)
    assert "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"] == {
        "name": "sentiment.csv",
        "type": "sentiment.csv",
        "split": "validation",
    }
    text = ModelCard.load(out / README_FILE).text
    assert "hf download someone/spam --local-dir spam" in text and 'model="someone/spam"' in text
    saved = json.loads((out / "bertfit.json").read_text())["config"]
    assert (saved["push_to_hub"], saved["hub_private"]) == ("someone/spam", True)


def test_train_refuses_a_push_that_cannot_work_before_training(tiny_config, tmp_path, monkeypatch):
    data = TextDataset(*map(list, zip(*sentiment_rows(40))))
    with pytest.raises(ConfigError, match="set output_dir"):
        train(tiny_config(push_to_hub="me/model"), data)
    with pytest.raises(ConfigError, match="not a Hugging Face repository id"):
        train(tiny_config(push_to_hub="me/my model", output_dir=str(tmp_path / "a")), data)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConfigError, match="needs a Hugging Face token"):
        train(tiny_config(push_to_hub="me/model", output_dir=str(tmp_path / "b")), data)
    assert list(tmp_path.iterdir()) == []  # refused before anything was trained or written


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _expect_hub_error(result, model: Path, repo: str) -> None:
    assert result.exit_code == 3, result.output
    last = result.stderr.strip().splitlines()[-1]  # after the training's log lines, if any
    assert last.startswith("HubError: could not upload") and "Traceback" not in result.output
    assert f"The model is saved locally at {model}" in last
    assert last.endswith(f"retry the upload with: bertfit push {model} {repo}")


def test_an_unreachable_hub_is_a_hub_error_with_the_retry_command(trained_dir, monkeypatch):
    # The real HfApi, against a port nobody listens on.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    result = run("push", trained_dir, "me/model")
    _expect_hub_error(result, trained_dir, "me/model")


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.dumps({"error": "Invalid credentials in Authorization header"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token")
    yield
    server.shutdown()
    server.server_close()


def test_a_refused_token_is_a_hub_error_that_says_to_log_in(trained_dir, refusing_hub):
    result = run("push", trained_dir, "me/model", "--private")
    _expect_hub_error(result, trained_dir, "me/model --private")
    assert "check the token" in result.stderr and "hf auth login" in result.stderr


def test_train_with_a_failed_push_keeps_the_model_and_says_how_to_retry(
    tiny_model_dir, sentiment_csv, tmp_path, refusing_hub
):
    out = tmp_path / "model"
    result = run("train", "--data", sentiment_csv, "--output-dir", out, *_fast_flags(tiny_model_dir), "--push-to-hub",
                 "me/model")  # fmt: skip
    _expect_hub_error(result, out, "me/model")
    assert TextClassifier.from_pretrained(out).predict("the film was superb") in {"pos", "neg"}
    assert (out / README_FILE).is_file()


def test_push_command_help_and_train_options():
    assert "--push-to-hub" in run("train", "--help").stdout
    result = run("push", "--help")
    assert result.exit_code == 0 and "--private" in result.stdout
