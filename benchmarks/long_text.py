"""Compare long-text modes on 20 Newsgroups: truncate (the reference) against chunk, same data and budget.

For each dataset (raw posts, and posts stripped of headers, footers and quotes), takes a stratified subsample of
the train file, splits it stratified into train and validation, trains the embedded model once with --long-text
truncate and once with --long-text chunk (same max_length, epochs, seed), and prints one table: validation accuracy,
macro-F1, wall and CPU time (the process's, so that a paused or shared machine shows) and the real tokens of the
training forward passes of each mode side by side. The chunk model is also scored with the other aggregation rule
(max instead of mean) at prediction time, without retraining. ``--truncate-epochs`` gives truncation more epochs
(chunk mode takes an optimizer step per batch of windows, so at equal epochs it takes more steps), and ``--modes``
runs one mode only.

    .venv/bin/python benchmarks/long_text.py --docs 3000 --epochs 2 --max-length 256
    .venv/bin/python benchmarks/long_text.py --datasets raw --modes truncate --truncate-epochs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

from bertfit import TrainConfig, evaluate, load_data, train
from bertfit.data import TextDataset, train_val_split

NEWSGROUPS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "twenty_newsgroups"
DATASETS = {"raw": NEWSGROUPS / "train.csv.gz", "stripped": NEWSGROUPS / "stripped" / "train.csv"}


def subsample(data: TextDataset, docs: int, seed: int) -> TextDataset:
    """A stratified subsample of ``docs`` rows (all rows when there are fewer)."""
    if docs >= len(data):
        return data
    return train_val_split(data, docs / len(data), seed)[1]


def run(config: TrainConfig, train_ds: TextDataset, val_ds: TextDataset) -> dict:
    start, cpu_start = time.perf_counter(), time.process_time()
    clf = train(config, train_ds, val_ds)
    result = {
        "accuracy": clf.metrics["accuracy"],
        "macro_f1": clf.metrics["macro_f1"],
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "train_tokens": clf.info_["train_tokens"],
        "best_epoch": clf.info_["best"]["epoch"],
        "windows": clf.info_["long_text"].get("train_windows", len(train_ds)),
    }
    if config.long_text == "chunk":  # the other rule, on the same model: aggregation is a prediction-time choice
        other = "max" if config.aggregate == "mean" else "mean"
        clf.card_ = dataclasses.replace(clf.card, windowing=dataclasses.replace(clf.windowing, aggregate=other))
        metrics = evaluate(clf, val_ds)
        result["other_rule"] = (other, metrics["accuracy"], metrics["macro_f1"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["raw", "stripped"], choices=sorted(DATASETS))
    parser.add_argument("--docs", type=int, default=3000, help="Stratified subsample of the train file.")
    parser.add_argument("--val-size", type=float, default=0.2, help="Share of the subsample for validation.")
    parser.add_argument("--modes", nargs="+", default=["truncate", "chunk"], choices=["truncate", "chunk"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--truncate-epochs", type=float, default=None, help="Epochs of truncate; default: --epochs.")
    parser.add_argument("--max-length", type=int, default=256, help="Truncation length and window size.")
    parser.add_argument("--stride", type=int, default=None, help="Window overlap; default: max_length // 4.")
    parser.add_argument("--max-windows", type=int, default=8, help="Most windows per training text (0: all).")
    parser.add_argument("--aggregate", default="mean", choices=["mean", "max"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    base = TrainConfig(
        long_text="truncate", epochs=args.epochs, max_length=args.max_length, seed=args.seed, baselines=False
    )
    chunk = dataclasses.replace(
        base, long_text="chunk", stride=args.stride, max_windows=args.max_windows, aggregate=args.aggregate
    )
    configs = {"truncate": dataclasses.replace(base, epochs=args.truncate_epochs or args.epochs), "chunk": chunk}
    rows = []
    for name in args.datasets:
        data = subsample(load_data(DATASETS[name]), args.docs, args.seed)
        train_ds, val_ds = train_val_split(data, args.val_size, args.seed)
        results = {mode: run(configs[mode], train_ds, val_ds) for mode in args.modes}
        rows.append((name, len(train_ds), len(val_ds), results))
        print(name, results, flush=True)
    stride = chunk.stride if chunk.stride is not None else args.max_length // 4
    print(
        f"\n{args.docs} documents (stratified), {args.val_size:.0%} validation, {args.epochs:g} epochs, max_length "
        f"{args.max_length}, chunk: stride {stride}, max_windows {args.max_windows}, {args.aggregate} of window logits"
    )
    other = "max" if args.aggregate == "mean" else "mean"
    header = ["dataset", "train/val texts", "mode", "epochs", "train windows", "accuracy", "macro-F1"]
    header.append("macro-F1 vs truncate")
    header += ["wall s", "CPU s", "train tokens", f"{other} rule: acc / macro-F1"]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for name, n_train, n_val, results in rows:
        for mode, r in results.items():
            cells = [
                name,
                f"{n_train}/{n_val}",
                mode,
                f"{configs[mode].epochs:g}",
                str(r["windows"]),
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
            ]
            reference = results.get("truncate", {"macro_f1": float("nan")})["macro_f1"]
            cells.append(f"{r['macro_f1'] - reference:+.4f}")
            cells += [f"{r['seconds']:.0f}", f"{r['cpu_seconds']:.0f}", f"{r['train_tokens']:,}"]
            cells.append("{1:.4f} / {2:.4f}".format(*r["other_rule"]) if "other_rule" in r else "")
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
