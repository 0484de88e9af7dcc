"""How well `bertfit audit` finds planted label errors: flip a share of SST-2's training labels, audit, score.

Flips ``--flip`` (default 5%) of the sentence-level SST-2 training labels at random (fixed seed), audits the file
with the defaults (frozen embeddings of the embedded default model + logistic regression, 5 folds), and prints the
precision and recall of the flagged rows at finding the flipped ones, the same at top-k (k = the number flipped, by
label quality), and the wall time. SST-2 has label noise of its own, so some "false positives" are real errors: the
script prints a few of them to look at.

    python benchmarks/audit_flips.py [--features embeddings|tfidf] [--flip 0.05] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bertfit.audit import audit

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sst2" / "sentence_level" / "train.csv"


def flip(frame: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``frame`` with the labels of ``share`` of its rows changed to another label at random, and those rows."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(frame), round(share * len(frame)), replace=False))
    labels = sorted(frame["label"].unique())
    flipped = frame.copy()
    for row in rows:
        others = [label for label in labels if label != frame.at[row, "label"]]
        flipped.at[row, "label"] = others[rng.integers(len(others))]
    return flipped, rows


def scores(found: set[int], truth: set[int]) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--features", default="embeddings")
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # the embedding time among them
    frame = pd.read_csv(args.source, keep_default_na=False)
    noisy, rows = flip(frame, args.flip, args.seed)
    truth = {int(r) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train_flipped.csv"
        noisy.to_csv(path, index=False)
        start = time.perf_counter()
        result = audit(path, Path(tmp) / "audit", features=args.features, folds=args.folds)
        seconds = time.perf_counter() - start
    flagged = {int(result.rows[i]) for i in np.flatnonzero(result.label_issue)}
    ranked = [int(result.rows[i]) for i in np.argsort(result.quality, kind="stable")]
    top = set(ranked[: len(truth)])
    p_flag, r_flag = scores(flagged, truth)
    p_top, r_top = scores(top, truth)
    print(f"{args.source}: {len(frame):,} rows, {len(truth)} labels flipped ({args.flip:.0%}, seed {args.seed})")
    print(f"audit: {result.method}; out-of-fold accuracy {result.oof_accuracy:.4f} on the flipped labels")
    print(f"wall time: {seconds:.1f} s on {os.cpu_count()} cpu cores (reading, embedding, folds, cleanlab, files)")
    print(f"flagged by cleanlab: {len(flagged)}; precision {p_flag:.3f}, recall {r_flag:.3f}")
    print(f"top-{len(truth)} by label quality: precision = recall = {p_top:.3f}")
    print(
        f"conflicting duplicate groups: {len(result.conflict_groups)}; near-duplicate rows: {len(result.near_pairs)}"
    )
    print("\nflagged but not flipped (SST-2's own noise, or hard texts), lowest quality first:")
    shown = [row for row in result.issues if row["row"] not in truth and "label" in row["issue"]][:8]
    for row in shown:
        print(f"  row {row['row']:>5}  quality {row['quality']:.3f}  given {row['given_label']:<9} {row['text'][:90]}")


if __name__ == "__main__":
    main()
