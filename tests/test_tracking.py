"""Tracking: the local run log in bertfit.json, and a real MLflow run in a local file store."""

from __future__ import annotations

import json

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
