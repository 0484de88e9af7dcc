"""Measure the default hyperparameters for the embedded model: learning rate x epochs on validation.

Runs bertfit's train() with its defaults except the learning rate, on each dataset given, evaluating every epoch,
and prints one table: dataset, learning rate, then the validation accuracy / macro-F1 after each epoch.

    .venv/bin/python benchmarks/defaults_sweep.py --datasets sms_spam sst2_sentence --lrs 5e-5 1e-4 2e-4 --epochs 4
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from bertfit import TrainConfig, load_data, train
from bertfit.data import train_val_split

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = {
    "sms_spam": (Path(__file__).resolve().parents[1] / "examples" / "sms_spam.csv", None),
    "sst2_sentence": (SHARED / "sst2/sentence_level/train.csv", SHARED / "sst2/sentence_level/validation.csv"),
    "emotion": (SHARED / "emotion/train.csv", SHARED / "emotion/validation.csv"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["sms_spam", "sst2_sentence"], choices=sorted(DATASETS))
    parser.add_argument("--lrs", nargs="+", type=float, default=[5e-5, 1e-4, 2e-4])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = []
    for name in args.datasets:
        train_path, val_path = DATASETS[name]
        data = load_data(train_path)
        if val_path is None:  # the demo's split: stratified 80/20, seed 42
            data, val = train_val_split(data, 0.2, 42)
        else:
            val = load_data(val_path)
        for lr in args.lrs:
            start = time.perf_counter()
            config = TrainConfig(learning_rate=lr, epochs=args.epochs, batch_size=args.batch_size, baselines=False)
            clf = train(config, data, val)
            seconds = time.perf_counter() - start
            cells = [f"{r['accuracy']:.4f}/{r['macro_f1']:.4f}" for r in clf.info_["history"]]
            rows.append((name, lr, seconds, cells))
            print(f"{name:<14} lr={lr:<8g} {seconds:6.0f}s  " + "  ".join(cells), flush=True)
    print(
        f"\n{'dataset':<14} {'lr':<8} {'time':>6}  "
        + "  ".join(f"epoch {i + 1} acc/macroF1" for i in range(args.epochs))
    )
    for name, lr, seconds, cells in rows:
        print(f"{name:<14} {lr:<8g} {seconds:5.0f}s  " + "  ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
