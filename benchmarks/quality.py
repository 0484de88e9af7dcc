"""Quality on every shared dataset: bertfit with its defaults against the two baselines, on the same split.

For each dataset in ../shared/datasets, trains bertfit with every default (the embedded all-MiniLM-L6-v2), and prints
one table: validation accuracy (subset accuracy for multi-label), macro-F1, the dataset's extra metric (spam F1 for
SMS Spam, micro-F1 for GoEmotions) and wall time, with the dataset's target. The TF-IDF + logistic-regression and
frozen-embeddings + logistic-regression rows are the baselines that the same ``train()`` call fits by default on the
same split: bertfit's seconds include them (as a user's ``bertfit train`` does), a baseline's seconds are its own.
On single-label datasets bertfit's validation decisions are also compared with TF-IDF's text by text: the macro-F1
gain and its paired-bootstrap standard error, so that "above TF-IDF" says whether it is above the noise too.

Splits: SMS Spam has no official split: a stratified 20% (seed 42, as the README's demo); 20 Newsgroups (stripped and
raw) holds out a stratified 10% of its train file; the others use their validation files. Test splits are never used.

    .venv/bin/python benchmarks/quality.py [--datasets sms_spam sst2 emotion 20ng_stripped 20ng_raw go_emotions]
        [--histories DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bertfit import TrainConfig, load_data, train
from bertfit.data import train_val_split
from bertfit.lexical import fit_lexical, fusion_gain
from bertfit.metrics import NOISE_STANDARD_ERRORS

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@dataclass
class Spec:
    train: str
    validation: str | None = None  # None: a stratified split of train
    val_size: float = 0.1
    label_column: str = "label"
    label_sep: str | None = None
    extra: str | None = None  # the extra metric key shown
    target: tuple[str, float] | None = None  # (metric key, minimum); None: "beat the TF-IDF baseline on macro-F1"
    options: dict | None = None  # TrainConfig options that differ from the defaults (printed with the row)


SPECS = {
    "sms_spam": Spec("sms_spam/train.csv", val_size=0.2, extra="f1", target=("f1", 0.95)),
    "sst2": Spec("sst2/sentence_level/train.csv", "sst2/sentence_level/validation.csv", target=("accuracy", 0.885)),
    "emotion": Spec("emotion/train.csv", "emotion/validation.csv", target=("accuracy", 0.925)),
    "20ng_stripped": Spec("twenty_newsgroups/stripped/train.csv", val_size=0.1),
    "20ng_raw": Spec("twenty_newsgroups/train.csv.gz", val_size=0.1),
    "go_emotions": Spec(
        "go_emotions/train.csv",
        "go_emotions/validation.csv",
        label_column="labels",
        label_sep=";",
        extra="micro_f1",
        target=("micro_f1", 0.55),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="*", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--no-baselines", action="store_true", help="train with --no-baselines (no baseline rows)")
    parser.add_argument("--histories", type=Path, help="write each run's evaluation history to DIR/NAME.json")
    parser.add_argument("--seed", type=int, default=None, help="bertfit's seed (default: TrainConfig's, 42)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"{platform.node()} | torch {torch.__version__} | {torch.get_num_threads()} threads | bertfit defaults\n")
    lines = []
    for name in args.datasets:
        spec = SPECS[name]
        if args.seed is not None:
            spec = Spec(**{**spec.__dict__, "options": {**(spec.options or {}), "seed": args.seed}})
        lines.extend(_run(name, spec, baselines=not args.no_baselines, history_dir=args.histories))
        print("\n".join(lines[-3:]), flush=True)  # as each dataset finishes
    header = f"{'dataset':<15}{'model':<28}{'accuracy':>9}{'macro-F1':>10}{'extra':>16}{'seconds':>9}  target"
    print("\n" + header + "\n" + "-" * (len(header) + 30))
    print("\n".join(lines))


def _run(name: str, spec: Spec, baselines: bool, history_dir: Path | None = None) -> list[str]:
    data = load_data(DATASETS / spec.train, label_column=spec.label_column, label_sep=spec.label_sep)
    if spec.validation:
        train_ds = data
        val_ds = load_data(DATASETS / spec.validation, label_column=spec.label_column, label_sep=spec.label_sep)
    else:
        train_ds, val_ds = train_val_split(data, spec.val_size, seed=42)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        config = TrainConfig(cache_dir=cache, baselines=baselines, **(spec.options or {}))
        clf = train(config, train_ds, val_ds)
        seconds = time.perf_counter() - start
    label = (
        "bertfit (" + (", ".join(f"{k} {v}" for k, v in spec.options.items()) if spec.options else "defaults") + ")"
    )
    results = {label: {"metrics": clf.metrics_, "seconds": seconds}}
    info = clf.info_
    print(
        f"{name}: {len(train_ds)} train / {len(val_ds)} validation texts; bertfit best epoch {info['best']['epoch']}, "
        f"max_length {info['max_length']}, long_text {info['long_text']}, setup {info['setup_seconds']} s, "
        f"training {info['train_seconds']} s",
        flush=True,
    )
    if info.get("lexical"):  # the lexical head: the encoder alone, the average, and whether it was kept
        print(f"{name}: lexical head {info['lexical']}", flush=True)
    for key, result in (info.get("baselines") or {}).items():  # fitted by train() itself, inside its wall time
        if key != "majority_class":
            results[key] = result
    if history_dir is not None:
        keys = ("history", "best", "setup_seconds", "train_seconds", "max_length", "long_text", "timings", "lexical")
        record = {"dataset": name, "seconds": seconds, **{k: info.get(k) for k in keys}}
        suffix = f"-seed{spec.options['seed']}" if spec.options and "seed" in spec.options else ""
        (history_dir / f"{name}{suffix}.json").write_text(json.dumps(record, indent=1, default=str))
    tfidf = results.get("tfidf_logreg", {}).get("metrics", {}).get("macro_f1")
    paired = None if clf.decision.multi_label or tfidf is None else _against_tfidf(clf, train_ds, val_ds)
    if paired is not None:
        print(f"{name}: bertfit - TF-IDF macro-F1 {paired[0]:+.4f}, paired-bootstrap standard error {paired[1]:.4f}")
    lines = []
    for model, result in results.items():
        m = result["metrics"]
        extra = f"{spec.extra} {m[spec.extra]:.4f}" if spec.extra else ""
        verdict = _verdict(spec, m, tfidf, paired) if model.startswith("bertfit") else ""
        lines.append(
            f"{name:<15}{model:<28}{m['accuracy']:>9.4f}{m['macro_f1']:>10.4f}{extra:>16}{result['seconds']:>9.0f}"
            f"  {verdict}"
        )
    return lines


def _against_tfidf(clf, train_ds, val_ds) -> tuple[float, float]:
    # bertfit's validation decisions against TF-IDF + LR's (the lexical head's own argmax, the tfidf_logreg baseline),
    # text by text: the macro-F1 gain and its paired-bootstrap standard error. Outside the timed part.
    labels = list(clf.labels)
    head = clf.lexical_ or fit_lexical(train_ds.texts, train_ds.labels, labels)
    records = clf.validation_predictions_
    assert [r["text"] for r in records] == list(val_ds.texts), "the records are not the validation texts in order"
    truth = [labels.index(label) for label in val_ds.labels]
    ours = np.eye(len(labels))[[labels.index(r["label"]) for r in records]]
    theirs = np.eye(len(labels))[head.scores(val_ds.texts).argmax(axis=1)]
    _, _, gain, error = fusion_gain(truth, theirs, ours, "macro_f1")
    return gain, error


def _verdict(spec: Spec, metrics: dict, tfidf_macro_f1: float | None, paired=None) -> str:
    if spec.target is not None:
        key, minimum = spec.target
        return f"{key} >= {minimum}: {'met' if metrics[key] >= minimum else 'MISSED'}"
    if tfidf_macro_f1 is None:
        return "macro-F1 above TF-IDF: (baselines not run)"
    met = metrics["macro_f1"] > tfidf_macro_f1
    verdict = f"macro-F1 above TF-IDF ({tfidf_macro_f1:.4f}): {'met' if met else 'MISSED'}"
    if paired is not None:
        margin = NOISE_STANDARD_ERRORS * paired[1]
        verdict += (
            f", {'clearly' if paired[0] > margin else 'within the noise'} ({NOISE_STANDARD_ERRORS:g} SE {margin:.4f})"
        )
    return verdict


if __name__ == "__main__":
    main()
