"""Time to accuracy: from the raw CSV to 88.1% validation accuracy on SST-2 (sentence level), bertfit against the
DistilBERT tutorial's recipe, on the same model.

- bertfit: ``bertfit.train`` with every default, reading the CSV files itself, with an empty tokenization cache.
  The clock starts before the files are read and stops at the end of the first evaluation at or above the target.
- tutorial: its hand-written PyTorch loop: every text padded to max_length 128, fp32, AdamW (lr 2e-5, eps 1e-8),
  batch 32, a linear schedule without warm-up, gradient clipping at 1.0, 4 epochs, evaluation after each epoch. It
  stops at the target or when ``--reference-budget`` seconds have passed (the full recipe takes about half an hour
  here); then the time per epoch and the accuracy reached are what it reports.

88.1% is the tutorial's own best result (DistilBERT, 4 epochs of about 11 minutes each).

    .venv/bin/python benchmarks/time_to_accuracy.py [--target 0.881] [--reference-budget 900] [--output-dir DIR]
        [--skip-reference] [--seeds N [N ...]]

Which evaluation first passes the target moves by a whole epoch with the seed (2026-12-03: epochs 1.5 to 3.5 for
seeds 0, 1 and 42), so one seed says little: ``--seeds 0 1 42`` runs each and reports the median time to the target
(a seed that never reaches it counts as slower than every one that does).
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

from bertfit import TrainConfig, train
from bertfit.backbone import default_model_path, quiet_transformers

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "sst2" / "sentence_level"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=float, default=0.881)
    parser.add_argument("--reference-budget", type=float, default=900, help="seconds for the tutorial recipe")
    parser.add_argument("--output-dir", default=None, help="keep bertfit's model here (predict_speed.py uses it)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument(
        "--seeds", "--seed", type=int, nargs="+", default=[None], help="bertfit's seeds (default: TrainConfig's, 42)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    model = str(default_model_path())
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | target {args.target}")
    rows = [_bertfit(model, args.target, args.output_dir, seed) for seed in args.seeds]
    if len(rows) > 1:
        rows.append(_median(rows))
    if not args.skip_reference:
        rows.append(_tutorial(model, args.target, args.reference_budget))
    print(f"\n{'way':<42}{'to target':>11}{'at epoch':>10}{'best acc':>10}{'s / epoch':>11}{'run s':>9}")
    for row in rows:
        reached = f"{row['to_target']:.0f} s" if row["to_target"] is not None else "not reached"
        epoch = f"{row['epoch']:g}" if row["epoch"] is not None else "-"
        print(
            f"{row['name']:<42}{reached:>11}{epoch:>10}{row['best']:>10.4f}{row['per_epoch']:>11.0f}"
            f"{row['seconds']:>9.0f}"
        )
    ours, reference = rows[-2:] if not args.skip_reference else (None, None)  # the median row, when several seeds
    if ours and ours["to_target"] and reference["to_target"]:
        print(f"\nbertfit reaches {args.target:.1%} {reference['to_target'] / ours['to_target']:.1f}x sooner")


def _median(rows: list[dict]) -> dict:
    # The median seed by time to the target (not reached: after every seed that reached it), and the mean of the rest.
    ordered = sorted(rows, key=lambda row: (row["to_target"] is None, row["to_target"] or 0.0))
    middle = ordered[(len(ordered) - 1) // 2]
    return {
        "name": f"bertfit, median of {len(rows)} seeds",
        "to_target": middle["to_target"],
        "epoch": middle["epoch"],
        "best": sum(row["best"] for row in rows) / len(rows),
        "per_epoch": sum(row["per_epoch"] for row in rows) / len(rows),
        "seconds": sum(row["seconds"] for row in rows) / len(rows),
    }


def _bertfit(model: str, target: float, output_dir: str | None, seed: int | None = None) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        seeded = {} if seed is None else {"seed": seed}
        config = TrainConfig(cache_dir=cache, output_dir=output_dir, overwrite=True, baselines=False, **seeded)
        start = time.perf_counter()
        clf = train(config, DATASETS / "train.csv", DATASETS / "validation.csv")
        seconds = time.perf_counter() - start
    info = clf.info_
    elapsed = info["setup_seconds"]
    to_target = epoch = None
    for row in info["history"]:
        elapsed += row["seconds"]
        if to_target is None and row["accuracy"] >= target:
            to_target, epoch = elapsed, row["epoch"]
    for row in info["history"]:
        print(f"  bertfit epoch {row['epoch']:g}: accuracy {row['accuracy']:.4f}, {row['seconds']:.0f} s")
    return {
        "name": "bertfit (defaults, raw CSV)" + ("" if seed is None else f", seed {seed}"),
        "to_target": to_target,
        "epoch": epoch,
        "best": max(row["accuracy"] for row in info["history"]),
        "per_epoch": sum(row["seconds"] for row in info["history"]) / info["history"][-1]["epoch"],
        "seconds": seconds,
    }


def _tutorial(model_path: str, target: float, budget: float) -> dict:
    start = time.perf_counter()
    torch.manual_seed(42)
    train_df = pd.read_csv(DATASETS / "train.csv", keep_default_na=False)
    val_df = pd.read_csv(DATASETS / "validation.csv", keep_default_na=False)
    labels = sorted(train_df["label"].unique())
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=len(labels))

    def tensors(df):
        texts = df["text"].tolist()
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        y = torch.tensor([labels.index(label) for label in df["label"]])
        return enc["input_ids"], enc["attention_mask"], y

    train_x, train_mask, train_y = tensors(train_df)
    val_x, val_mask, val_y = tensors(val_df)
    epochs, batch_size = 4, 32
    steps_per_epoch = -(-len(train_y) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, eps=1e-8)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps_per_epoch * epochs)
    to_target = reached_epoch = None
    history: list[tuple[float, float, float]] = []  # (epoch, accuracy, seconds)
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_y))
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            loss = model(input_ids=train_x[idx], attention_mask=train_mask[idx], labels=train_y[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if time.perf_counter() - start > budget:
                break
        done = epoch + (step + 1) / steps_per_epoch
        accuracy = _accuracy(model, val_x, val_mask, val_y)
        history.append((done, accuracy, time.perf_counter() - epoch_start))
        print(f"  tutorial epoch {done:.2f}: accuracy {accuracy:.4f}, {history[-1][2]:.0f} s")
        if accuracy >= target:
            to_target, reached_epoch = time.perf_counter() - start, done
            break
        if time.perf_counter() - start > budget:
            break
    trained = history[-1][0]
    return {
        "name": "tutorial recipe (pad 128, fp32)",
        "to_target": to_target,
        "epoch": reached_epoch,
        "best": max(acc for _, acc, _ in history),
        "per_epoch": sum(s for _, _, s in history) / trained,
        "seconds": time.perf_counter() - start,
    }


def _accuracy(model, x, mask, y) -> float:
    model.eval()
    with torch.no_grad():
        batches = range(0, len(y), 64)
        logits = torch.cat([model(input_ids=x[i : i + 64], attention_mask=mask[i : i + 64]).logits for i in batches])
    return float((logits.argmax(-1) == y).float().mean())


if __name__ == "__main__":
    main()
