"""Training speed: the tutorials' way, the stock HF Trainer at its best, and bertfit, side by side in one run.

Every row fine-tunes the same model on the same stratified slice of SST-2 (sentence level) with the same
hyperparameters (batch size, learning rate, 10% warm-up, weight decay 0.01, clipping 1.0, epochs, max_length 128)
and is scored on the same 872 validation sentences (argmax accuracy). The slice is written to a CSV file once; each
row runs in a fresh process from that file, so its whole-process wall time (imports, reading, tokenizing, model load,
training, evaluation, and for bertfit also the threshold, the baselines, the report and saving) is measured as a user
sees it, and the benchmark's own bookkeeping (sampling the slice, counting its tokens for MFU) is not in it.

- tutorial: HF Trainer, every text padded to max_length, fp32, random batches (the tutorials' recipe);
- stock best: HF Trainer with dynamic padding, ``train_sampling_strategy="group_by_length"`` and bf16 where the CPU
  has it natively (AVX512-BF16/AMX), else fp32: the precision bertfit's ``auto`` picks on the same machine;
- stock best + fused AdamW: the same with ``optim="adamw_torch_fused"`` (the optimizer switch alone);
- bertfit: ``bertfit train`` with its defaults for everything else (fused AdamW, the row-sparse embedding update,
  its own loop, its own BERT without importing transformers); then without the row-sparse update, on transformers'
  BERT (``--no-native``); when asked (``--ways``), with ``--torch-compile``, and under three settings of OpenMP's
  threads, which drive torch's CPU kernels: bound to cores (``OMP_PROC_BIND=close OMP_PLACES=cores``), spinning
  between kernels (``OMP_WAIT_POLICY=active``) and one thread (``OMP_NUM_THREADS=1``: what the second core gives).

Training time excludes evaluation. MFU is the model FLOP/s (6 x non-embedding parameters x real tokens, plus
attention 12 x layers x hidden x length^2 per text) over the matrix-product ceiling measured at the start of the run,
in that native precision (bf16 emulated on a CPU without it is ~50x slower than fp32, no ceiling to measure against).
Rows with several seeds show the mean and the range of accuracy, and the mean time.

    .venv/bin/python benchmarks/train_speed.py [--rows 2000] [--epochs 1] [--batch-size 16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MAX_LENGTH = 128
ROWS = {  # name: (description, seeds: "all" or 1)
    "tutorial": ("tutorial (pad 128, fp32)", 1),
    "stock": ("stock best (dyn. pad, {precision})", "all"),
    "stock_fused": ("stock best + fused AdamW", 1),
    "bertfit": ("bertfit (defaults)", "all"),
    "bertfit_dense": ("bertfit --no-lazy-embeddings", 1),
    "bertfit_transformers": ("bertfit --no-native", 1),
    "bertfit_compile": ("bertfit --torch-compile", 1),
    "bertfit_bind": ("bertfit, threads bound to cores", 1),
    "bertfit_active": ("bertfit, OMP_WAIT_POLICY=active", 1),
    "bertfit_1thread": ("bertfit, one thread", 1),
}
_OPT_IN = ("bertfit_compile", "bertfit_bind", "bertfit_active", "bertfit_1thread")  # rows run only when asked
_BERTFIT_FLAGS = {  # the bertfit rows' flags beside the defaults
    "bertfit_dense": ["--no-lazy-embeddings"],
    "bertfit_transformers": ["--no-native"],
    "bertfit_compile": ["--torch-compile"],
}
_ENV = {  # the thread settings of OpenMP (torch's CPU threads here), set before the row's process starts
    "bertfit_bind": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"},
    "bertfit_active": {"OMP_WAIT_POLICY": "active"},
    "bertfit_1thread": {"OMP_NUM_THREADS": "1"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATASETS / "sst2" / "sentence_level" / "train.csv", type=Path)
    parser.add_argument("--validation", default=DATASETS / "sst2" / "sentence_level" / "validation.csv", type=Path)
    parser.add_argument("--rows", type=int, default=2000, help="training rows (a stratified sample)")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default=None, help="model directory; default: the embedded all-MiniLM-L6-v2")
    parser.add_argument("--ways", nargs="+", default=[w for w in ROWS if w not in _OPT_IN], choices=list(ROWS))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # run one row in this process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    from bertfit.backbone import default_model_path

    args.model = args.model or str(default_model_path())
    precision = _native_precision()
    ceiling = _matmul_flops(torch.bfloat16 if precision == "bf16" else torch.float32)
    print(
        f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
        f"{precision} matmul ceiling "
        f"{ceiling / 1e9:.0f} GFLOP/s | {args.rows} SST-2 training texts, 872 validation, {args.epochs:g} epoch(s), "
        f"batch {args.batch_size}, lr {args.lr:g}, max_length {MAX_LENGTH}, seeds {args.seeds}\n"
    )
    with tempfile.TemporaryDirectory() as data:  # the training slice every row reads, written once
        train_df = _sample(pd.read_csv(args.data, keep_default_na=False), args.rows)
        args.data = Path(data) / "train.csv"
        train_df.to_csv(args.data, index=False)
        squares = float((_lengths(args.model, train_df["text"].tolist()) ** 2).sum()) * args.epochs
        results = {
            way: [_run(way, seed, args) | {"squares": squares} for seed in _seeds(way, args)] for way in args.ways
        }
    _print_table(results, _flop_model(args.model), ceiling, precision)


def _seeds(way: str, args) -> list[int]:
    return args.seeds if ROWS[way][1] == "all" else args.seeds[:1]


def _run(way: str, seed: int, args) -> dict:
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "row.json"
        command = [sys.executable, __file__, "--child", way, "--seed", str(seed), "--out", str(out)]
        command += ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
        command += ["--lr", str(args.lr), "--model", args.model, "--data", str(args.data)]
        command += ["--validation", str(args.validation)]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=work, env=os.environ | _ENV.get(way, {}))
        row = json.loads(out.read_text())
    row["process_seconds"] = time.perf_counter() - start
    print(
        f"  {_label(way):<30} seed {seed}: train {row['train_seconds']:6.1f} s, process "
        f"{row['process_seconds']:6.1f} s, accuracy {row['accuracy']:.4f}",
        flush=True,
    )
    return row


def _child(args) -> None:
    # One row, from the slice's CSV files to a trained model: what its process does is what a user's would.
    logging.basicConfig(level=logging.WARNING)
    if args.child.startswith("bertfit"):
        row = _bertfit_way(args)
    else:
        train_df = pd.read_csv(args.data, keep_default_na=False)
        row = _trainer_way(args, train_df, pd.read_csv(args.validation, keep_default_na=False))
    args.out.write_text(json.dumps(row))


def _sample(df: pd.DataFrame, rows: int) -> pd.DataFrame:
    if rows >= len(df):
        return df
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(df, train_size=rows, stratify=df["label"], random_state=0)
    return sample.reset_index(drop=True)


def _native_precision() -> str:
    """``bf16`` where this CPU has it natively, else ``fp32``: what ``--precision auto`` trains in here."""
    from bertfit.hardware import resolve_precision

    return resolve_precision("auto", "cpu").name


def _label(way: str) -> str:
    return ROWS[way][0].format(precision=_native_precision())


def _matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _trainer_way(args, train_df, val_df) -> dict:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    stock = args.child != "tutorial"
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=2)
    labels = sorted(train_df["label"].unique())
    padding = {} if stock else {"padding": "max_length"}

    def encode(df):
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=MAX_LENGTH, **padding)
        ids = [labels.index(label) for label in df["label"]]
        return [{**{k: enc[k][i] for k in enc}, "labels": ids[i]} for i in range(len(df))]

    tokens = _TokenCount(model)
    with tempfile.TemporaryDirectory() as workdir:
        training_args = TrainingArguments(
            output_dir=workdir,
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=128,
            learning_rate=args.lr,
            warmup_steps=0.1,
            weight_decay=0.01,
            max_grad_norm=1.0,
            seed=args.seed,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            bf16=stock and _native_precision() == "bf16",
            train_sampling_strategy="group_by_length" if stock else "random",
            optim="adamw_torch_fused" if args.child == "stock_fused" else "adamw_torch",
        )
        collator = DataCollatorWithPadding(tokenizer) if stock else default_data_collator
        trainer = Trainer(model=model, args=training_args, train_dataset=encode(train_df), data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # no log dicts on stdout
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        prediction = trainer.predict(encode(val_df))
    accuracy = float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())
    return {"train_seconds": seconds, "real": tokens.real, "total": tokens.total, "accuracy": accuracy}


class _TokenCount:
    """Real and padded tokens of the training forward passes (a forward pre-hook)."""

    def __init__(self, model) -> None:
        self.real = self.total = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None:
            self.real += int(mask.sum())
            self.total += mask.numel()


def _bertfit_way(args) -> dict:
    # The command a user runs, in this process (its wall time is the parent's measure of the whole process).
    from bertfit.cli import app

    work = Path.cwd()
    command = ["train", "--data", str(args.data), "--validation", str(args.validation)]
    command += ["--model", args.model, "--output-dir", str(work / "model"), "--epochs", str(args.epochs)]
    command += ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--max-length", str(MAX_LENGTH)]
    command += ["--seed", str(args.seed), "--cache-dir", "none", "--quiet"]
    command += _BERTFIT_FLAGS.get(args.child, [])
    try:
        app(command)
    except SystemExit as exit:
        if exit.code:
            raise
    info = json.loads((work / "model" / "bertfit.json").read_text())
    eval_seconds = sum(row.get("eval_runtime", 0.0) for row in info["log_history"])
    best = info["history"][-1]  # one evaluation per epoch; the last is the end of training
    return {
        "train_seconds": info["train_seconds"] - eval_seconds,
        "real": info["train_tokens"],
        "total": round(info["train_tokens"] / (1 - info["padding_share"])),
        "accuracy": best["accuracy"],
    }


def _lengths(model: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    return np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]])


def _flop_model(model_path: str):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embeddings
    config = model.config

    def flops(row: dict) -> float:
        return 6 * non_embedding * row["real"] + 12 * config.num_hidden_layers * config.hidden_size * row["squares"]

    return flops


def _print_table(results: dict[str, list[dict]], flops, ceiling: float, precision: str) -> None:
    bertfit = results.get("bertfit")
    reference = {k: np.mean([r[k] for r in bertfit]) for k in ("train_seconds", "process_seconds")} if bertfit else {}
    header = (
        f"\n{'way':<30}{'seeds':>6}{'train s':>9}{'process s':>10}{'real tok/s':>11}{'padding':>9}{'MFU':>7}"
        f"{'accuracy (range)':>24}{'bertfit faster: train':>23}{'process':>9}"
    )
    print(header)
    print("-" * len(header))
    for way, rows in results.items():
        train_s, process_s = (np.mean([r[k] for r in rows]) for k in ("train_seconds", "process_seconds"))
        real, total = np.mean([r["real"] for r in rows]), np.mean([r["total"] for r in rows])
        mfu = np.mean([flops(r) / r["train_seconds"] for r in rows]) / ceiling
        accuracy = [r["accuracy"] for r in rows]
        spread = f"{np.mean(accuracy):.4f} ({min(accuracy):.4f}-{max(accuracy):.4f})"
        faster = (
            f"{train_s / reference['train_seconds']:>22.2f}x{process_s / reference['process_seconds']:>8.2f}x"
            if reference
            else ""
        )
        print(
            f"{_label(way):<30}{len(rows):>6}{train_s:>9.1f}{process_s:>10.1f}{real / train_s:>11.0f}"
            f"{1 - real / total:>9.1%}{mfu:>7.1%}{spread:>24}{faster}"
        )
    print(
        "\n'bertfit faster' = that row's mean time / bertfit's: training alone, and the whole process (bertfit's "
        "includes its threshold, three baselines, report and save). MFU against the "
        f"{precision} matmul ceiling of this run."
    )


if __name__ == "__main__":
    main()
