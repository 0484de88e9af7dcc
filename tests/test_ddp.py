"""More than one process: torchrun with 2 CPU processes (gloo) on the tiny model, and parallel file prediction."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bertfit import TextClassifier, predict_file


def test_torchrun_two_processes_train_once_with_the_global_schedule(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free rendezvous port on this machine
        "--nproc_per_node",
        "2",
        "-m",
        "bertfit",
        "train",
        "--data",
        str(sentiment_csv),
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(out),
        "--epochs",
        "5",
        "--batch-size",
        "4",
        "--lr",
        "5e-3",
        "--precision",
        "fp32",
        "--evals-per-epoch",
        "1",  # the log's first row at the end of epoch 1
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)

    assert result.returncode == 0, result.stderr[-3000:]
    # Only rank 0 reports and writes.
    assert result.stdout.count("Per-epoch validation") == 1
    assert result.stdout.count("Model saved to") == 1
    assert result.stderr.count("effective batch size 8 = 4 per process x 2 process(es) x 1 accumulation") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "sentiment.csv"]  # no staging leftovers
    info = json.loads((out / "bertfit.json").read_text())
    steps_per_epoch = -(-108 // 2 // 4)  # 108 training rows shared by 2 processes, 4 per process per step
    assert info["schedule"] == {
        "world_size": 2,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "effective_batch_size": 8,
        "optimizer_steps": 5 * steps_per_epoch,
        "warmup_steps": 7,  # the default 10% of 70 global steps, rounded up
    }
    # Warm-up and linear decay run over the global step count: the rate of step 14 (the last of epoch 1, counted
    # from 0 as 13) is 5e-3 * (70 - 13) / (70 - 7).
    first_log = next(row for row in info["log_history"] if "learning_rate" in row)
    assert first_log["step"] == steps_per_epoch
    assert first_log["learning_rate"] == pytest.approx(5e-3 * 57 / 63)
    # Losses are per-text means (not multiplied by the process count), and the model learned the task.
    assert all(row["train_loss"] < 1.0 and row["val_loss"] < 1.0 for row in info["history"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["macro_f1"] > 0.9
    assert TextClassifier.from_pretrained(out).predict("the film was superb") == "pos"


def test_predict_file_with_workers_matches_one_process(trained_dir, tmp_path):
    texts = [f"the film was {w}" for w in ["great", "awful", "superb", "boring", "fine", "sad"]] * 400
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text"], *([t] for t in texts)])
    clf = TextClassifier.from_pretrained(trained_dir)

    assert predict_file(clf, source, tmp_path / "one.csv") == len(texts)
    assert predict_file(clf, source, tmp_path / "two.csv", num_workers=2) == len(texts)

    one, two = (list(csv.DictReader((tmp_path / name).read_text().splitlines())) for name in ("one.csv", "two.csv"))
    assert [r["text"] for r in two] == texts  # input order kept across the workers' 3 tasks
    assert [r["label"] for r in two] == [r["label"] for r in one]
    assert [float(r["prob_pos"]) for r in two] == pytest.approx([float(r["prob_pos"]) for r in one], abs=1e-6)


def test_batch_predictor_adds_prediction_columns_in_a_batch_engine(trained_dir):
    datasets = pytest.importorskip("datasets")  # a dev dependency; Ray Data's map_batches takes the same callable
    from bertfit.predict import BatchPredictor

    texts = ["the film was great", "this movie is awful", "it was quite superb"] * 5
    predictor = BatchPredictor(trained_dir)
    result = datasets.Dataset.from_dict({"text": texts}).map(predictor, batched=True, batch_size=4)

    clf = TextClassifier.from_pretrained(trained_dir)
    assert result["label"] == clf.predict(texts)
    assert result["prob_pos"] == pytest.approx(clf.predict_proba(texts)[:, 1].tolist(), abs=1e-6)
    frame = predictor(pd.DataFrame({"text": texts[:2], "id": [7, 8]}))  # pandas batches too
    assert list(frame.columns) == ["text", "id", "label", "score", "prob_neg", "prob_pos"]
