"""Training speed: the tutorials' way, the stock HF Trainer at its best, and bertfit, side by side in one run.

All three fine-tune the same model on the same stratified slice of SST-2 (sentence level) with the same
hyperparameters (batch size, learning rate, warm-up, weight decay, clipping, epochs, max_length 128) and are scored on
the same validation set:

- tutorial: HF Trainer, every text padded to max_length, fp32, random batches (the tutorials' recipe);
- stock best: HF Trainer with dynamic padding, ``train_sampling_strategy="group_by_length"`` and bf16;
- bertfit: ``bertfit.train`` with its defaults for everything else; then with ``--freeze-embeddings`` (and with
  ``--torch-compile`` when asked).

Training time excludes evaluation (bertfit's per-epoch evaluation is subtracted using the Trainer's eval_runtime).
MFU is the model FLOP/s (6 x non-embedding parameters x real tokens, plus attention 12 x layers x hidden x length^2
per text) over the bf16 matrix-product ceiling measured at the start of the run. A second table times the
tokenization cache: tokenizing a corpus against reading it back.

    .venv/bin/python benchmarks/train_speed.py [--rows 2000] [--epochs 1] [--batch-size 16] [--with-compile]
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from bertfit import TextDataset, TrainConfig, train
from bertfit.backbone import default_model_path, quiet_transformers
from bertfit.cache import tokenize_cached

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MAX_LENGTH = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=DATASETS / "sst2" / "sentence_level" / "train.csv", type=Path)
    parser.add_argument("--validation", default=DATASETS / "sst2" / "sentence_level" / "validation.csv", type=Path)
    parser.add_argument("--rows", type=int, default=2000, help="training rows (a stratified sample)")
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--model", default=None, help="model directory; default: the embedded all-MiniLM-L6-v2")
    parser.add_argument("--with-compile", action="store_true", help="add a bertfit row with --torch-compile")
    parser.add_argument("--cache-data", default=DATASETS / "twenty_newsgroups" / "stripped" / "train.csv", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], choices=["tutorial", "stock"], help="rows to leave out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = args.model or str(default_model_path())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train_df = _sample(pd.read_csv(args.data, keep_default_na=False), args.rows)
    val_df = pd.read_csv(args.validation, keep_default_na=False)
    ceiling = {dtype: _matmul_flops(dtype, device) for dtype in (torch.bfloat16, torch.float32)}
    print(
        f"{platform.node()} | {device} | torch {torch.__version__} | {torch.get_num_threads()} threads | "
        f"matmul ceiling: bf16 {ceiling[torch.bfloat16] / 1e9:.0f} GFLOP/s, fp32 {ceiling[torch.float32] / 1e9:.0f}"
    )
    print(
        f"{len(train_df)} training texts, {len(val_df)} validation texts, {args.epochs:g} epoch(s), batch "
        f"{args.batch_size}, lr {args.lr:g}, max_length {MAX_LENGTH}\n"
    )
    common = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=device)
    rows = []
    if "tutorial" not in args.skip:
        rows.append(_trainer_way("tutorial (pad 128, fp32)", model, train_df, val_df, stock=False, **common))
    if "stock" not in args.skip:
        rows.append(_trainer_way("stock best (dyn. pad, bf16)", model, train_df, val_df, stock=True, **common))
    rows.append(_bertfit_way("bertfit", model, train_df, val_df, **common))
    rows.append(_bertfit_way("bertfit --freeze-embeddings", model, train_df, val_df, freeze=True, **common))
    if args.with_compile:
        rows.append(_bertfit_way("bertfit --torch-compile", model, train_df, val_df, compile=True, **common))
    flops = _flop_model(model)
    _print_table(rows, flops, ceiling[torch.bfloat16])
    _cache_table(model, args.cache_data)


def _sample(df: pd.DataFrame, rows: int) -> pd.DataFrame:
    if rows >= len(df):
        return df
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(df, train_size=rows, stratify=df["label"], random_state=0)
    return sample.reset_index(drop=True)


def _matmul_flops(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class _Tokens:
    real: int = 0  # tokens that are not padding
    total: int = 0  # tokens including padding
    squares: int = 0  # sum of real length^2 per text: the attention term of the FLOP count


def _count_tokens(model) -> _Tokens:
    """Counts the tokens of the training forward passes (a forward pre-hook on ``model``)."""
    counts = _Tokens()

    def hook(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None:
            lengths = mask.sum(dim=1)
            counts.real += int(lengths.sum())
            counts.squares += int((lengths**2).sum())
            counts.total += mask.numel()

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return counts


def _trainer_way(name, model_path, train_df, val_df, *, stock, epochs, batch_size, lr, device):
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    labels = sorted(train_df["label"].unique())
    padding = {} if stock else {"padding": "max_length"}

    def encode(df):
        enc = tokenizer(df["text"].tolist(), truncation=True, max_length=MAX_LENGTH, **padding)
        ids = [labels.index(label) for label in df["label"]]
        return [{**{k: enc[k][i] for k in enc}, "labels": ids[i]} for i in range(len(df))]

    tokens = _count_tokens(model)
    with tempfile.TemporaryDirectory() as workdir:
        args = TrainingArguments(
            output_dir=workdir,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=64,
            learning_rate=lr,
            warmup_steps=0.1,
            weight_decay=0.01,
            max_grad_norm=1.0,
            seed=42,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=device == "cpu",
            bf16=stock,
            train_sampling_strategy="group_by_length" if stock else "random",
        )
        collator = DataCollatorWithPadding(tokenizer) if stock else default_data_collator
        trainer = Trainer(model=model, args=args, train_dataset=encode(train_df), data_collator=collator)
        trainer.remove_callback(PrinterCallback)  # no log dicts on stdout
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        prediction = trainer.predict(encode(val_df))
    accuracy = float((np.argmax(prediction.predictions, axis=1) == prediction.label_ids).mean())
    return {"name": name, "seconds": seconds, "tokens": tokens, "accuracy": accuracy}


def _bertfit_way(name, model_path, train_df, val_df, *, epochs, batch_size, lr, device, compile=False, freeze=False):
    config = TrainConfig(
        model_name_or_path=model_path,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=lr,
        max_length=MAX_LENGTH,
        threshold_metric="none",
        cache_dir="none",
        torch_compile=compile,
        freeze_embeddings=freeze,
        baselines=False,
    )
    data = TextDataset(train_df["text"].tolist(), train_df["label"].astype(str).tolist())
    validation = TextDataset(val_df["text"].tolist(), val_df["label"].astype(str).tolist())
    start = time.perf_counter()
    clf = train(config, data, validation)
    total = time.perf_counter() - start
    info = clf.info_
    eval_seconds = sum(row.get("eval_runtime", 0.0) for row in info["log_history"])
    # bertfit counts real and padded tokens itself; the attention term comes from the texts' lengths.
    lengths = [len(ids) for ids in clf.tokenizer_(data.texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    tokens = _Tokens(
        real=info["train_tokens"],
        total=round(info["train_tokens"] / (1 - info["padding_share"])),
        squares=round(sum(n**2 for n in lengths) * epochs),
    )
    print(f"  ({name}: {total:.1f} s end to end, including data preparation and {eval_seconds:.1f} s evaluation)")
    return {
        "name": name,
        "seconds": info["train_seconds"] - eval_seconds,
        "tokens": tokens,
        "accuracy": clf.metrics_["accuracy"],
    }


def _flop_model(model_path: str):
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    embeddings = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    non_embedding = sum(p.numel() for p in model.parameters()) - embeddings
    config = model.config

    def flops(tokens: _Tokens) -> float:
        return 6 * non_embedding * tokens.real + 12 * config.num_hidden_layers * config.hidden_size * tokens.squares

    return flops


def _print_table(rows, flops, ceiling: float) -> None:
    bertfit = next(row for row in rows if row["name"] == "bertfit")
    best_accuracy = max(row["accuracy"] for row in rows)
    header = (
        f"{'way':<30}{'train s':>9}{'real tok/s':>12}{'padding':>9}{'val acc':>9}{'vs best':>9}"
        f"{'bertfit is':>12}{'MFU':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        tokens = row["tokens"]
        rate = tokens.real / row["seconds"]
        mfu = flops(tokens) / row["seconds"] / ceiling
        faster = row["seconds"] / bertfit["seconds"]
        print(
            f"{row['name']:<30}{row['seconds']:>9.1f}{rate:>12.0f}{1 - tokens.real / tokens.total:>9.1%}"
            f"{row['accuracy']:>9.4f}{100 * (row['accuracy'] - best_accuracy):>+9.2f}{faster:>11.2f}x{mfu:>8.1%}"
        )
    print(
        "\n'bertfit is' = that row's training time / bertfit's (how many times faster bertfit trains); 'vs best' = "
        "accuracy points below the best row; MFU against the bf16 matmul ceiling."
    )


def _cache_table(model_path: str, corpus: Path) -> None:
    if not corpus.is_file():
        print(f"\n(no tokenization-cache table: {corpus} is missing)")
        return
    texts = pd.read_csv(corpus, keep_default_na=False)["text"].tolist()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        tokenize_cached(tokenizer, texts, 512, Path(cache))
        miss = time.perf_counter() - start
        start = time.perf_counter()
        tokenize_cached(tokenizer, texts, 512, Path(cache))
        hit = time.perf_counter() - start
        size = sum(f.stat().st_size for f in Path(cache).iterdir())
    print(f"\nTokenization cache on {corpus.parent.name}/{corpus.name} ({len(texts)} texts, max_length 512):")
    print(f"{'first run (tokenize + write)':<32}{miss:>8.2f} s")
    print(f"{'second run (read the cache)':<32}{hit:>8.2f} s   ({miss / hit:.1f}x; entry {size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
