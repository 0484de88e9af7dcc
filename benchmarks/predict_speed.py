"""Prediction speed: ``transformers.pipeline`` with its defaults against bertfit (PyTorch fp32 and bf16) and its ONNX
exports (fp32, int8), on 10,000 SST-2 texts, in one run; the whole process of ``bertfit predict --input`` with its
defaults against a script around ``transformers.pipeline`` on the same file, and of classifying one text; then the
peak memory of predicting a 1,000,000-row CSV against a 100,000-row one.

Speed is measured on 10,000 texts drawn from the GLUE SST-2 training file (phrases and sentences); agreement is the
share of those texts that get the label that bertfit's fp32 prediction gives (every engine takes the most probable
label); accuracy is on the 872 validation sentences. The model is a bertfit model trained on SST-2 (``--model``;
trained for one epoch when missing).

The whole-process table times each command in a fresh process, from start to the written output (imports, model
load, reading, tokenizing, predicting, writing): what a user waits for. The model is trained with
``--threshold-metric none`` so that both take the most probable label and the agreement compares engines only.

The one-text table times a fresh process that classifies a single text (median of 3): the script around the
pipeline, ``bertfit predict MODEL TEXT`` and the same on the model's ONNX export; there imports and model load are
all of the time (bertfit's BERT predicts without importing transformers' model classes: :mod:`bertfit.native`).

The memory comparison runs ``bertfit.predict_file`` in a fresh process per file and reads its peak resident memory.
It uses a tiny random BERT with the default model's tokenizer so that a million rows take minutes, not hours: what is
compared is the file path (reading, tokenizing, writing), whose memory must not grow with the file; a larger
model adds the same constant to both.

    .venv/bin/python benchmarks/predict_speed.py [--model runs/sst2] [--texts 10000] [--memory-rows 100000 1000000]
        [--tables engines process startup memory]
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bertfit import TextClassifier, TrainConfig, train
from bertfit.backbone import default_model_path, quiet_transformers

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sst2"
TABLES = ("engines", "process", "startup", "memory")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/sst2", type=Path)
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--memory-rows", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES), help="the tables to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not (args.model / "bertfit.json").is_file():
        print(f"training {args.model} (1 epoch of SST-2 sentence level) first ...")
        train(
            TrainConfig(epochs=1, output_dir=str(args.model), baselines=False, threshold_metric="none"),
            DATASETS / "sentence_level" / "train.csv",
            DATASETS / "sentence_level" / "validation.csv",
        )
    glue = pd.read_csv(DATASETS / "train.csv", keep_default_na=False)
    texts = glue["text"].sample(args.texts, random_state=0).tolist()
    val = pd.read_csv(DATASETS / "sentence_level" / "validation.csv", keep_default_na=False)
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | model {args.model}")
    print(f"{len(texts)} texts, mean {np.mean([len(t.split()) for t in texts]):.1f} words\n")
    if "engines" in args.tables:
        _engines_table(args.model, texts, val)
    if "process" in args.tables:
        _whole_process_table(args.model, texts)
    if "startup" in args.tables:
        _startup_table(args.model, texts[0])
    if "memory" in args.tables and args.memory_rows:
        _memory_table(glue["text"].tolist(), args.memory_rows)


def _engines_table(model_dir: Path, texts: list[str], val: pd.DataFrame) -> None:
    engines = _engines(model_dir)
    rows, reference = [], None
    for name, predict in engines:
        predict(texts[:64])  # warm-up: first-call allocations, kernel selection
        start = time.perf_counter()
        labels = predict(texts)
        seconds = time.perf_counter() - start
        if name == "bertfit PyTorch fp32":
            reference = labels
        accuracy = float(np.mean(np.asarray(predict(val["text"].tolist())) == val["label"].to_numpy()))
        rows.append({"name": name, "rate": len(texts) / seconds, "labels": labels, "accuracy": accuracy})
    pipeline_rate = rows[0]["rate"]
    fp32_rate = next(row["rate"] for row in rows if row["name"] == "bertfit PyTorch fp32")
    fp32_accuracy = next(row["accuracy"] for row in rows if row["name"] == "bertfit PyTorch fp32")
    header = f"{'engine':<28}{'texts/s':>9}{'vs pipeline':>13}{'vs bertfit fp32':>17}{'agreement':>11}{'val acc':>9}"
    print(header + f"{'acc change':>12}")
    print("-" * (len(header) + 12))
    for row in rows:
        agreement = float(np.mean(np.asarray(row["labels"]) == np.asarray(reference)))
        print(
            f"{row['name']:<28}{row['rate']:>9.0f}{row['rate'] / pipeline_rate:>12.1f}x"
            f"{row['rate'] / fp32_rate:>16.2f}x"
            f"{agreement:>11.4f}{row['accuracy']:>9.4f}{100 * (row['accuracy'] - fp32_accuracy):>+12.2f}"
        )


_PIPELINE_SCRIPT = """
import sys
import pandas as pd
from transformers import pipeline
pipe = pipeline("text-classification", model=sys.argv[1], device="cpu")
texts = pd.read_csv(sys.argv[2], keep_default_na=False)["text"].tolist()
labels = [row["label"] for row in pipe(texts, truncation=True)]
pd.DataFrame({"text": texts, "label": labels}).to_csv(sys.argv[3], index=False)
"""


def _whole_process_table(model_dir: Path, texts: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bertfit-predict-"))
    source = work / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(source, index=False)
    bertfit = [sys.executable, "-m", "bertfit", "predict", str(model_dir), "--input", str(source), "--quiet"]
    commands = {
        "script around transformers.pipeline": [sys.executable, "-c", _PIPELINE_SCRIPT, str(model_dir), str(source)],
        "bertfit predict --input (defaults)": bertfit + ["--output"],
        "bertfit predict --input --precision fp32": bertfit + ["--precision", "fp32", "--output"],
    }
    print(f"\nWhole process on {len(texts):,} texts (a fresh process each, start to written output):")
    print(f"{'command':<42}{'seconds':>9}{'texts/s':>9}{'vs pipeline':>13}{'agreement':>11}")
    rows = {}
    for name, command in commands.items():
        out = work / f"{len(rows)}.csv"
        start = time.perf_counter()
        subprocess.run([*command, str(out)], check=True, capture_output=True)
        rows[name] = (time.perf_counter() - start, pd.read_csv(out, keep_default_na=False)["label"].to_numpy())
    reference_seconds, reference_labels = rows["script around transformers.pipeline"]
    for name, (seconds, labels) in rows.items():
        agreement = float(np.mean(labels == reference_labels))
        print(
            f"{name:<42}{seconds:>9.1f}{len(texts) / seconds:>9.0f}{reference_seconds / seconds:>12.1f}x"
            f"{agreement:>11.4f}"
        )


def _startup_table(model_dir: Path, text: str, repeats: int = 3) -> None:
    # What a user waits for to classify one text: imports and model load dominate.
    work = Path(tempfile.mkdtemp(prefix="bertfit-startup-"))
    export_dir = work / "onnx"
    from bertfit.export import export_onnx

    export_onnx(model_dir, export_dir)
    script = _PIPELINE_SCRIPT.replace(
        'pd.read_csv(sys.argv[2], keep_default_na=False)["text"].tolist()', "[sys.argv[2]]"
    )
    commands = {
        "script around transformers.pipeline": [
            sys.executable,
            "-c",
            script,
            str(model_dir),
            text,
            str(work / "p.csv"),
        ],
        "bertfit predict MODEL TEXT": [sys.executable, "-m", "bertfit", "predict", str(model_dir), text],
        "bertfit predict ONNX_EXPORT TEXT": [sys.executable, "-m", "bertfit", "predict", str(export_dir), text],
    }
    print(f"\nOne text, whole process (start to printed label; median of {repeats} fresh processes):")
    print(f"{'command':<42}{'seconds':>9}{'vs pipeline':>13}")
    seconds = {}
    for name, command in commands.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        seconds[name] = float(np.median(times))
    reference = seconds["script around transformers.pipeline"]
    for name, value in seconds.items():
        print(f"{name:<42}{value:>9.2f}{reference / value:>12.1f}x")


def _engines(model_dir: Path):
    from transformers import pipeline

    from bertfit.export import export_onnx
    from bertfit.onnx_model import OnnxClassifier

    with quiet_transformers():
        pipe = pipeline("text-classification", model=str(model_dir), device=-1)
    fp32 = TextClassifier.from_pretrained(model_dir)
    bf16 = TextClassifier.from_pretrained(model_dir, precision="auto")
    exports = Path(tempfile.mkdtemp(prefix="bertfit-onnx-"))
    onnx = {}
    for quantize in (None, "int8"):
        out = exports / (quantize or "fp32")
        export_onnx(model_dir, out, quantize=quantize)
        onnx[quantize] = OnnxClassifier.from_pretrained(out)
    from bertfit.hardware import resolve_precision

    return [
        ("transformers.pipeline", lambda texts: [row["label"] for row in pipe(texts)]),
        ("bertfit PyTorch fp32", _argmax(fp32)),
        (f"bertfit PyTorch {resolve_precision('auto')[0]} (auto)", _argmax(bf16)),
        ("bertfit ONNX fp32", _argmax(onnx[None])),
        ("bertfit ONNX int8", _argmax(onnx["int8"])),
    ]


def _argmax(clf):
    # The most probable label, as the pipeline gives: the comparison is between engines, not decision rules (a
    # bertfit model's predict applies the threshold tuned on validation).
    return lambda texts: [clf.labels[k] for k in clf.predict_proba(texts).argmax(axis=1)]


# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec.
_MEMORY_SCRIPT = """
import sys
from bertfit import TextClassifier, predict_file
clf = TextClassifier.from_pretrained(sys.argv[1], batch_size=256)
n = predict_file(clf, sys.argv[2], sys.argv[3])
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(n, peak)
"""


def _memory_table(pool: list[str], sizes: list[int]) -> None:
    work = Path(tempfile.mkdtemp(prefix="bertfit-memory-"))
    model_dir = _tiny_model(work / "tiny")
    print(f"\nPeak memory of predict_file (tiny random BERT, the default model's tokenizer; {work}):")
    print(f"{'rows':>10}{'seconds':>10}{'peak RSS MiB':>14}")
    peaks = []
    rng = np.random.default_rng(0)
    for rows in sizes:
        source = work / f"in_{rows}.csv"
        pd.DataFrame({"text": rng.choice(pool, size=rows)}).to_csv(source, index=False)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _MEMORY_SCRIPT, str(model_dir), str(source), str(work / f"out_{rows}.csv")],
            capture_output=True,
            text=True,
            check=True,
        )
        written, peak_kib = map(int, out.stdout.split()[-2:])
        assert written == rows
        peaks.append(peak_kib / 1024)
        print(f"{rows:>10}{time.perf_counter() - start:>10.0f}{peaks[-1]:>14.0f}")
        source.unlink()
    if len(peaks) >= 2:
        print(f"largest / smallest file: {peaks[-1] / peaks[0]:.3f}x the peak memory")


def _tiny_model(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=512,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


if __name__ == "__main__":
    main()
