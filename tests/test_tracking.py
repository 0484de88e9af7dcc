"""Tracking: the local run log in bertfit.json, and real runs read back: MLflow (a local file store), TensorBoard
(its event files) and W&B (an offline run's files)."""

from __future__ import annotations

import json
import struct

import pytest

from bertfit import ConfigError, TrainConfig, train
from bertfit.exceptions import MissingDependencyError


def test_every_trainer_log_line_and_the_schedule_are_saved_locally(tiny_config, sentiment_csv, tmp_path):
    clf = train(tiny_config(epochs=2, output_dir=str(tmp_path / "out")), sentiment_csv)

    info = json.loads((tmp_path / "out" / "bertfit.json").read_text())
    assert info["schedule"] == clf.info_["schedule"]
    steps_per_epoch = -(-108 // 8)  # 120 rows less a 10% validation split, batches of 8
    assert info["schedule"] == {
        "world_size": 1,
        "per_device_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "effective_batch_size": 8,
        "optimizer_steps": 2 * steps_per_epoch,
        "warmup_steps": 0,
    }
    evals = [row for row in info["log_history"] if "eval_macro_f1" in row]
    assert [row["epoch"] for row in evals] == [1.0, 2.0]
    assert any("learning_rate" in row for row in info["log_history"])
    assert info["config"]["learning_rate"] == 5e-3


def test_mlflow_run_holds_params_metrics_and_the_model(tiny_config, sentiment_csv, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")  # a dev dependency: present in CI
    monkeypatch.chdir(tmp_path)  # the default tracking URI ./mlruns lands here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)

    clf = train(tiny_config(epochs=2, output_dir="out", track="mlflow"), sentiment_csv)

    assert (tmp_path / "mlruns").is_dir()
    mlflow.set_tracking_uri("./mlruns")
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("bertfit")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "out"
    params = run.data.params
    assert params["bertfit.learning_rate"] == "0.005"  # bertfit's options
    assert params["per_device_train_batch_size"] == "8"  # the Trainer's arguments, from its MLflowCallback
    metrics = run.data.metrics
    assert metrics["final_macro_f1"] == pytest.approx(clf.metrics["macro_f1"])
    assert "eval_macro_f1" in metrics and "loss" in metrics
    history = client.get_metric_history(run.info.run_id, "eval_macro_f1")
    assert len(history) == 2  # one point per evaluation
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/config.json", "model/bertfit.json", "model/metrics.json"} <= artifacts
    assert mlflow.active_run() is None


def test_unknown_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match="track must be one of mlflow, tensorboard, wandb"):
        TrainConfig(track="neptune")


def test_missing_tracker_package_names_the_install_line(tiny_config, sentiment_csv, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[track\]'"):
        train(tiny_config(track="wandb"), sentiment_csv)


def test_a_tracker_that_cannot_open_a_run_stops_before_the_model_loads(
    tiny_config, sentiment_csv, tmp_path, monkeypatch
):
    pytest.importorskip("tensorboard")  # the track extra; a dev dependency: present in CI
    from bertfit import pipeline

    loads = []
    monkeypatch.setattr(pipeline, "_load", lambda *args: loads.append(args))
    blocked = tmp_path / "file"
    blocked.write_text("a file where the log directory would go")
    config = tiny_config(track="tensorboard", tracking_uri=str(blocked), output_dir=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"--track tensorboard could not open a run at .*file: .*pass a writable"):
        train(config, sentiment_csv)
    assert loads == [] and not (tmp_path / "out").exists()


def _logged_points(log_history: list[dict]) -> dict[str, dict[int, float]]:
    """What the trainer sent to the tracker: each logged number by name and optimizer step."""
    points: dict[str, dict[int, float]] = {}
    for row in log_history:
        if "train_runtime" in row:  # the run's closing row stays in bertfit.json
            continue
        for name, value in row.items():
            if name not in ("epoch", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.setdefault(name, {})[row["step"]] = float(value)
    return points


def test_tensorboard_event_files_hold_every_logged_scalar(tiny_config, sentiment_csv, tmp_path):
    pytest.importorskip("tensorboard")  # the track extra; a dev dependency: present in CI
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    config = tiny_config(epochs=2, output_dir=str(tmp_path / "out"), track="tensorboard", tracking_uri=str(logs))
    clf = train(config, sentiment_csv)

    assert any((logs / "out").glob("events.out.tfevents.*"))  # one directory per run, named as its output
    events = EventAccumulator(str(logs / "out"), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep all
    events.Reload()
    expected = _logged_points(clf.info_["log_history"])
    assert {"loss", "learning_rate", "eval_loss", "eval_macro_f1"} <= set(expected)
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for name, by_step in expected.items():
        assert scalars[name].keys() == by_step.keys(), name
        for step, value in by_step.items():
            assert scalars[name][step] == pytest.approx(value, rel=1e-6), (name, step)  # stored as float32
    steps_per_epoch = -(-108 // 8)
    assert sorted(scalars["eval_macro_f1"]) == [steps_per_epoch, 2 * steps_per_epoch]  # one point per evaluation
    assert scalars["final_macro_f1"][0] == pytest.approx(clf.metrics["macro_f1"], rel=1e-6)
    (parameters,) = events.Tensors("parameters/text_summary")
    assert "per_device_train_batch_size: 8" in parameters.tensor_proto.string_val[0].decode()


def _wandb_records(run_file):
    """The records of a W&B run file (``run-<id>.wandb``), as wandb's own protobuf ``Record`` messages.

    wandb 0.31 has no Python reader of these files (its datastore module went with the move to the Go core), so this
    reads the framing here: a 7-byte header, then LevelDB log records (CRC, length, type) in 32 KiB blocks.
    """
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"  # magic, 0xBEE1 little-endian, version 0
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a record header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending, pos = pending + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL, or the LAST piece of a record split across blocks
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def _items(items) -> dict[str, object]:
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_wandb_offline_run_holds_params_metrics_and_summary(tiny_config, sentiment_csv, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")  # the track extra; a dev dependency: present in CI
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_PROJECT": "bertfit-test"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")  # no capture of pytest's output streams

    clf = train(tiny_config(epochs=2, output_dir=str(tmp_path / "out"), track="wandb"), sentiment_csv)
    # run.finish() returns before wandb's service process has written the run file (at times only its 7-byte header
    # is there); the service flushes it when it stops, which teardown waits for (else: at interpreter exit).
    wandb.teardown()

    (run_file,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")  # offline: nothing left the machine
    history: dict[int, dict[str, object]] = {}
    config: dict[str, object] = {}
    summary: dict[str, object] = {}
    runs = []
    for record in _wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = _items(record.history.item)
            history[items.pop("_step")] = items
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "summary":
            summary.update(_items(record.summary.update))
        elif kind == "run":
            runs.append(record.run)
    assert [(run.display_name, run.project) for run in runs] == [("out", "bertfit-test")]  # named as the output dir
    logged = _logged_points(clf.info_["log_history"])
    assert {"loss", "eval_loss", "eval_macro_f1"} <= set(logged)
    for name, by_step in logged.items():
        assert {step: row[name] for step, row in history.items() if name in row} == pytest.approx(by_step), name
    assert config["per_device_train_batch_size"] == 8 and config["bertfit.learning_rate"] == 5e-3
    assert summary["final_macro_f1"] == pytest.approx(clf.metrics["macro_f1"])
