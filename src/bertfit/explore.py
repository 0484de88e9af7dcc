"""Look at labelled text before training: label balance, lengths, truncation, duplicates, leakage, and plots.

:func:`explore` answers the questions the fine-tuning tutorials answer with a notebook: how skewed are the labels,
how long are the texts in characters, words and model tokens, what share does each ``max_length`` truncate, are
there empty texts, duplicates or texts with conflicting labels, and do train and validation look alike (and share
texts). :func:`format_summary` prints the answers; with ``output_dir`` the plots are written as PNG files.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .backbone import load_tokenizer, quiet_transformers, resolve_model
from .card import read_model_files
from .data import TextDataset, label_set, read_columns, sorted_labels
from .features import suggest_max_length
from .plots import figure, save_figure

__all__ = [
    "explore",
    "format_summary",
    "token_lengths",
    "tokenize_text",
    "format_tokens",
    "LOG_SCALE_RATIO",
]

logger = logging.getLogger(__name__)

TRUNCATION_POINTS = (64, 128, 256, 512)
LOG_SCALE_RATIO = 10  # the label plot switches to a log scale when the largest class is this many times the smallest
TOKEN_SAMPLE = 100_000  # above this many texts, token statistics come from a random sample of this size
_EXAMPLES = 5


def explore(
    train: TextDataset | str | Path,
    validation: TextDataset | str | Path | None = None,
    tokenizer: Any = None,
    output_dir: str | Path | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    label_sep: str | None = None,
    sep: str | None = None,
    encoding: str = "utf-8",
    model_limit: int | None = None,
    sample_size: int = TOKEN_SAMPLE,
    seed: int = 0,
) -> dict[str, Any]:
    """Statistics of a labelled dataset (and its validation split), optionally with plots.

    Unlike :func:`bertfit.load_data`, files are read as they are: empty texts and rows without a label are counted
    rather than dropped or refused.

    Args:
        train: Labelled texts, or a file in any format ``--data`` takes.
        validation: Optional second split, compared with ``train`` side by side and checked for shared texts.
        tokenizer: A Hugging Face tokenizer, or the model (directory or hub id) to load it from; without one the
            token statistics are left out.
        output_dir: Where to write the PNG plots (created if needed); None writes none.
        text_column: Column holding the texts.
        label_column: Column holding the labels.
        label_sep: For multi-label data (e.g. ``"joy;love"``), the separator between a row's labels; label counts
            then count rows that carry each label. A label column of lists (JSONL, Parquet) is multi-label without it.
        sep: Field separator, as in :func:`bertfit.load_data`.
        encoding: Text encoding of the files.
        model_limit: The model's longest input in tokens; default: the tokenizer's ``model_max_length`` (512 when it
            has none).
        sample_size: Token statistics use a random sample of this many texts of larger splits (reported).
        seed: Seed of that sample.

    Returns:
        A JSON-ready dict with ``train`` (and ``validation``) statistics, ``comparison``, ``model`` (name, limit and
        suggested max_length), ``plots`` (file paths) and ``notes``.

    Raises:
        DataError: A file cannot be read or lacks a column.

    >>> stats = explore("examples/sms_spam.csv", tokenizer=load_tokenizer("bert-base-uncased"))  # doctest: +SKIP
    >>> stats["train"]["labels"]["imbalance_ratio"]  # doctest: +SKIP
    6.46
    """
    read = dict(text_column=text_column, label_column=label_column, sep=sep, encoding=encoding, label_sep=label_sep)
    splits = {"train": _frame(train, **read)}
    if validation is not None:
        splits["validation"] = _frame(validation, **read)
    if isinstance(tokenizer, (str, Path)):
        tokenizer, model_name = _load_tokenizer(str(tokenizer)), str(tokenizer)
    else:
        model_name = str(getattr(tokenizer, "name_or_path", ""))
    limit = model_limit or _tokenizer_limit(tokenizer)
    result: dict[str, Any] = {}
    notes: list[str] = []
    for name, frame in splits.items():
        result[name] = _split_stats(frame, tokenizer, limit, sample_size, seed, name, notes)
    if tokenizer is not None:
        result["model"] = {
            "name": model_name,
            "max_length_limit": limit,
            "suggested_max_length": suggest_max_length(splits["train"]["tokens"].dropna().to_numpy(), limit),
        }
    if validation is not None:
        result["comparison"] = _compare(splits["train"], splits["validation"], result)
    result["notes"] = notes + _findings(result)
    result["plots"] = [] if output_dir is None else _plots(splits, result, Path(output_dir))
    return result


def token_lengths(tokenizer, texts: Sequence[str], desc: str = "tokenizing") -> np.ndarray:
    """Token counts of ``texts``, special tokens included and nothing truncated, tokenized in batches."""
    from .progress import tokenize

    with quiet_transformers():  # silence "sequence longer than the model's maximum": we only count
        ids = tokenize(
            tokenizer,
            texts,
            desc=desc,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
    return np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(texts))


def tokenize_text(model: str, text: str, max_length: int | None = None) -> dict[str, Any]:
    """How ``model``'s tokenizer cuts ``text``: each token with its id, attention mask and special-token flag.

    Args:
        model: A model directory (a bertfit one lends its trained max_length) or hub id.
        text: The text to tokenize.
        max_length: The length to count against; default: the trained model's max_length, else the model limit.

    Returns:
        ``{"model", "text", "tokens": [{"token", "id", "attention_mask", "special"}], "count", "max_length",
        "truncated"}``; ``tokens`` is not truncated, so it shows what ``max_length`` would cut.

    >>> tokenize_text("runs/spam", "Free prize!")["count"]  # doctest: +SKIP
    5
    """
    tokenizer = _load_tokenizer(model)
    card = read_model_files(model).card if Path(model).is_dir() else None
    max_length = max_length or (card.max_length if card else None) or _tokenizer_limit(tokenizer)
    with quiet_transformers():
        encoded = tokenizer(text, return_special_tokens_mask=True, verbose=False)
    ids = encoded["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    rows = [
        {"token": token, "id": int(i), "attention_mask": int(mask), "special": bool(special)}
        for token, i, mask, special in zip(tokens, ids, encoded["attention_mask"], encoded["special_tokens_mask"])
    ]
    return {
        "model": model,
        "text": text,
        "tokens": rows,
        "count": len(rows),
        "max_length": int(max_length),
        "truncated": len(rows) > max_length,
    }


def format_tokens(result: dict[str, Any]) -> str:
    """The table of :func:`tokenize_text`: position, token, id, attention mask, special marker, then the count."""
    width = max([5, *(len(row["token"]) for row in result["tokens"])]) + 2
    lines = [f"{'#':>4}  {'token':<{width}}{'id':>8}{'mask':>6}  special"]
    for k, row in enumerate(result["tokens"]):
        cut = "  (cut by max_length)" if k >= result["max_length"] else ""
        special = "*" if row["special"] else ""
        lines.append(f"{k:>4}  {row['token']:<{width}}{row['id']:>8}{row['attention_mask']:>6}  {special:<7}{cut}")
    verdict = (
        f"truncated: {result['count'] - result['max_length']} token(s) cut"
        if result["truncated"]
        else f"fits, {result['max_length'] - result['count']} to spare"
    )
    lines.append(f"{result['count']} tokens (special tokens marked *) of max_length {result['max_length']}: {verdict}")
    return "\n".join(lines)


def _load_tokenizer(model: str):
    # The embedded default model answers to its hub id too, so the CLI can name it without the hub.
    return load_tokenizer(resolve_model(model))


# -- reading -------------------------------------------------------------------------------------------------------


def _frame(data, *, text_column, label_column, sep, encoding, label_sep) -> pd.DataFrame:
    # Columns: text (str), labels (tuple of label names; empty when missing), source in .attrs.
    if isinstance(data, TextDataset):
        texts, labels, source = data.texts, data.labels, data.source
    else:
        path = Path(data)
        columns = read_columns(path, [text_column, label_column], text_column=text_column, sep=sep, encoding=encoding)
        texts, labels, source = columns[text_column], columns[label_column], str(path)
    frame = pd.DataFrame({"text": texts}).fillna("")
    frame["labels"] = [label_set(label, label_sep) for label in labels]
    frame.attrs["source"] = source
    frame.attrs["multi_label"] = bool(label_sep) or any(isinstance(label, tuple) for label in labels)
    return frame


# -- statistics ----------------------------------------------------------------------------------------------------


def _split_stats(frame, tokenizer, limit, sample_size, seed, name, notes) -> dict[str, Any]:
    texts = frame["text"]
    empty = texts.str.strip() == ""
    frame["chars"] = texts.str.len()
    frame["words"] = texts.str.split().str.len()
    labelled = frame["labels"].str.len() > 0
    usable = frame[~empty]
    stats: dict[str, Any] = {
        "source": frame.attrs["source"],
        "rows": len(frame),
        "empty_texts": int(empty.sum()),
        "missing_labels": int((~labelled).sum()),
        "labels": _label_stats(frame[labelled & ~empty], frame.attrs["multi_label"]),
        "lengths": {"chars": _describe(usable["chars"]), "words": _describe(usable["words"])},
        **_duplicates(frame[~empty & labelled]),
    }
    frame["tokens"] = np.nan
    if tokenizer is not None and len(usable):
        index = usable.index
        if len(index) > sample_size:
            index = np.sort(np.random.default_rng(seed).choice(index, sample_size, replace=False))
            notes.append(
                f"{name}: token statistics come from a random sample of {sample_size:,} of {len(usable):,} texts"
            )
        lengths = token_lengths(tokenizer, frame.loc[index, "text"].tolist(), desc=f"tokenizing {name}")
        frame.loc[index, "tokens"] = lengths
        stats["lengths"]["tokens"] = _describe(pd.Series(lengths))
        stats["token_sample"] = {"texts": len(index), "of": len(usable), "sampled": len(index) < len(usable)}
        stats["truncated"] = {str(n): _share(lengths > n) for n in TRUNCATION_POINTS}
        stats["truncated_at_limit"] = {"max_length": limit, "share": _share(lengths > limit)}
    return stats


def _label_stats(frame: pd.DataFrame, multi_label: bool) -> dict[str, Any]:
    exploded = frame["labels"].explode()
    raw = exploded.value_counts()
    order = sorted(sorted_labels(list(raw.index)), key=lambda label: -raw[label])  # by count, ties in label order
    counts = {str(label): int(raw[label]) for label in order}
    stats: dict[str, Any] = {
        "classes": len(counts),
        "counts": counts,
        "shares": {label: _share(n, len(frame)) for label, n in counts.items()},
        "imbalance_ratio": round(max(counts.values()) / min(counts.values()), 2) if counts else None,
        "majority_share": _share(max(counts.values()), len(frame)) if counts else None,
    }
    stats["log_scale"] = bool(stats["imbalance_ratio"] and stats["imbalance_ratio"] >= LOG_SCALE_RATIO)
    if multi_label:
        per_text = frame["labels"].str.len().value_counts().sort_index()
        stats["labels_per_text"] = {str(k): int(v) for k, v in per_text.items()}
    return stats


def _describe(values: pd.Series) -> dict[str, float]:
    if values.empty:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "p99": 0.0, "max": 0}
    array = values.to_numpy(dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])  # linear interpolation between the closest ranks
    return {
        "mean": round(float(array.mean()), 2),
        "median": float(p50),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": int(array.max()),
    }


def _duplicates(frame: pd.DataFrame) -> dict[str, Any]:
    repeated = frame["text"].duplicated()
    # Distinct (text, label set) pairs per text, on integer codes: fast on millions of rows.
    text_codes, _ = pd.factorize(frame["text"])
    label_codes, _ = pd.factorize(frame["labels"])
    pairs = pd.DataFrame({"t": text_codes, "l": label_codes}).drop_duplicates()
    labels_per_text = np.bincount(pairs["t"].to_numpy(), minlength=text_codes.max() + 1 if len(text_codes) else 0)
    conflicting = np.flatnonzero(labels_per_text > 1)
    in_conflict = np.isin(text_codes, conflicting)
    examples = [
        {"text": text, "labels": {";".join(k): int(v) for k, v in group.value_counts().items()}}
        for text, group in frame[np.isin(text_codes, conflicting[:_EXAMPLES])].groupby("text", sort=False)["labels"]
    ]
    return {
        "duplicates": {"rows": int(repeated.sum()), "texts": int(frame.loc[repeated, "text"].nunique())},
        "conflicting_labels": {"texts": len(conflicting), "rows": int(in_conflict.sum()), "examples": examples},
    }


def _compare(train: pd.DataFrame, val: pd.DataFrame, result: dict[str, Any]) -> dict[str, Any]:
    from scipy.stats import ks_2samp

    train_texts = set(train["text"])
    shared = val["text"].isin(train_texts) & (val["text"].str.strip() != "")
    normal_train = set(_normalize(train["text"]))
    normal_shared = _normalize(val["text"]).isin(normal_train) & (val["text"].str.strip() != "")
    t_shares, v_shares = result["train"]["labels"]["shares"], result["validation"]["labels"]["shares"]
    labels = list(t_shares) + [label for label in v_shares if label not in t_shares]
    lengths = {}
    for unit in ("chars", "words", "tokens"):
        a, b = train[unit].dropna(), val[unit].dropna()
        if len(a) and len(b):
            lengths[unit] = {"ks_statistic": round(float(ks_2samp(a, b).statistic), 4)}
    return {
        "overlap": {
            "rows": int(shared.sum()),
            "texts": int(val.loc[shared, "text"].nunique()),
            "share_of_validation": _share(shared.sum(), len(val)),
            "rows_ignoring_case_and_spaces": int(normal_shared.sum()),
            "examples": val.loc[shared, "text"].drop_duplicates().head(_EXAMPLES).tolist(),
        },
        "label_shares": {
            label: {"train": t_shares.get(label, 0.0), "validation": v_shares.get(label, 0.0)} for label in labels
        },
        "labels_only_in_validation": [label for label in v_shares if label not in t_shares],
        "labels_only_in_train": [label for label in t_shares if label not in v_shares],
        "label_distance": round(0.5 * sum(abs(t_shares.get(k, 0) - v_shares.get(k, 0)) for k in labels), 4),
        "lengths": lengths,
    }


def _normalize(texts: pd.Series) -> pd.Series:
    return texts.str.lower().str.split().str.join(" ")


def _share(count, total=None) -> float:
    if total is None:  # a boolean array
        return round(float(np.mean(count)), 4) if len(count) else 0.0
    return round(float(count) / total, 4) if total else 0.0


def _tokenizer_limit(tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else 512  # tokenizers without a limit report a huge sentinel


def _findings(result: dict[str, Any]) -> list[str]:
    # Plain-language answers to "is something wrong with this data?".
    found = []
    for name in ("train", "validation"):
        stats = result.get(name)
        if stats is None:
            continue
        ratio = stats["labels"]["imbalance_ratio"]
        if ratio and ratio >= LOG_SCALE_RATIO:
            found.append(
                f"{name}: labels are skewed (largest/smallest class = {ratio:g}); accuracy will flatter the model, "
                "read macro-F1 and the per-class scores"
            )
        cut = stats.get("truncated_at_limit", {})
        if cut.get("share", 0) > 0.05:
            found.append(
                f"{name}: {cut['share']:.1%} of texts are longer than the model's limit of {cut['max_length']} tokens "
                "and lose their ends; keep the beginning in mind or split long texts"
            )
        if stats["empty_texts"]:
            found.append(f"{name}: {stats['empty_texts']} empty text(s); bertfit train drops them")
        if stats["missing_labels"]:
            found.append(f"{name}: {stats['missing_labels']} row(s) without a label; bertfit train refuses them")
        dup = stats["duplicates"]
        if dup["rows"]:
            found.append(
                f"{name}: {dup['rows']} duplicate row(s) ({dup['rows'] / stats['rows']:.1%}, {dup['texts']} distinct "
                "texts); a random split puts copies on both sides, so deduplicate before splitting"
            )
        if stats["conflicting_labels"]["texts"]:
            found.append(
                f"{name}: {stats['conflicting_labels']['texts']} text(s) occur with different labels; no model "
                "can get all of them right"
            )
    comparison = result.get("comparison")
    if comparison and comparison["overlap"]["rows"]:
        found.append(
            f"leakage: {comparison['overlap']['rows']} validation row(s) "
            f"({comparison['overlap']['share_of_validation']:.1%}) have a text that is also in train; validation "
            "scores will be optimistic"
        )
    for unit, ks in (comparison or {}).get("lengths", {}).items():
        if ks["ks_statistic"] > 0.1:
            found.append(
                f"train and validation texts differ in length ({unit}: Kolmogorov-Smirnov statistic "
                f"{ks['ks_statistic']:.2f}); see lengths_{unit}.png"
            )
            break
    if comparison and comparison["labels_only_in_validation"]:
        found.append(f"validation has labels missing from train: {comparison['labels_only_in_validation']}")
    if comparison and comparison["label_distance"] > 0.05:
        found.append(
            f"train and validation label shares differ (total variation distance {comparison['label_distance']:.3f})"
        )
    return found


# -- text summary --------------------------------------------------------------------------------------------------


def format_summary(result: dict[str, Any]) -> str:
    """The statistics of :func:`explore` as a readable text report."""
    splits = [name for name in ("train", "validation") if name in result]
    lines = []
    for name in splits:
        s = result[name]
        lines.append(f"== {name}: {s['source']}")
        lines.append(
            f"rows {s['rows']:,}   empty texts {s['empty_texts']:,}   missing labels {s['missing_labels']:,}   "
            f"duplicate rows {s['duplicates']['rows']:,}   texts with conflicting labels "
            f"{s['conflicting_labels']['texts']:,}"
        )
        labels = s["labels"]
        lines.append(
            f"{labels['classes']} classes, imbalance ratio {labels['imbalance_ratio']} (largest/smallest), "
            f"majority share {labels['majority_share']:.1%}"
        )
        if "labels_per_text" in labels:
            per_text = ", ".join(f"{k}: {v:,}" for k, v in labels["labels_per_text"].items())
            lines.append(f"multi-label: rows per number of labels {per_text}; shares are of rows carrying a label")
        for label, count in labels["counts"].items():
            lines.append(f"  {label:<24}{count:>10,}{labels['shares'][label]:>9.1%}")
        lines.append(f"  {'length':<10}" + "".join(f"{k:>10}" for k in ("mean", "median", "p95", "p99", "max")))
        for unit, d in s["lengths"].items():
            lines.append(f"  {unit:<10}" + "".join(f"{d[k]:>10g}" for k in ("mean", "median", "p95", "p99", "max")))
        if "truncated" in s:
            cut = "   ".join(f"{n}: {share:.1%}" for n, share in s["truncated"].items())
            lines.append(f"  truncated at {cut}")
        for example in s["conflicting_labels"]["examples"]:
            lines.append(f"  conflicting: {' '.join(example['text'].split())[:70]!r} {example['labels']}")
        lines.append("")
    if "model" in result:
        m = result["model"]
        lines.append(
            f"model {m['name']}: limit {m['max_length_limit']} tokens; suggested max_length "
            f"{m['suggested_max_length']} (99th percentile of train token counts, rounded up to a multiple of 8)"
        )
    if "comparison" in result:
        c = result["comparison"]
        o = c["overlap"]
        lines.append(
            f"train vs validation: {o['rows']:,} validation rows ({o['share_of_validation']:.1%}) share a text with "
            f"train ({o['rows_ignoring_case_and_spaces']:,} ignoring case and spaces); label distance "
            f"{c['label_distance']:.3f}; length KS "
            + ", ".join(f"{unit} {v['ks_statistic']:.3f}" for unit, v in c["lengths"].items())
        )
        lines.append(f"  {'label':<24}{'train':>9}{'valid.':>9}")
        for label, shares in c["label_shares"].items():
            lines.append(f"  {label:<24}{shares['train']:>9.1%}{shares['validation']:>9.1%}")
    if result["notes"]:
        lines.append("")
        lines.extend(f"note: {note}" for note in result["notes"])
    if result["plots"]:
        lines.append("")
        lines.extend(f"plot: {path}" for path in result["plots"])
    return "\n".join(lines)


# -- plots ---------------------------------------------------------------------------------------------------------


def _plots(splits: dict[str, pd.DataFrame], result: dict[str, Any], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [_plot_labels(result, out / "labels.png"), _plot_lengths(splits, "words", out / "lengths_words.png")]
    if "model" in result:
        paths.append(_plot_lengths(splits, "tokens", out / "lengths_tokens.png", result["model"]))
        paths.append(_plot_truncation(splits, result["model"], out / "truncation.png"))
    return paths


def _plot_labels(result: dict[str, Any], path: Path) -> str:
    fig = figure()
    ax = fig.add_subplot()
    train = result["train"]["labels"]
    labels = list(train["counts"])
    names = [name for name in ("train", "validation") if name in result]
    height = 0.8 / len(names)
    for k, name in enumerate(names):
        counts = result[name]["labels"]["counts"]
        ys = np.arange(len(labels)) + k * height
        ax.barh(ys, [counts.get(label, 0) for label in labels], height=height, label=f"{name} (rows)")
    ax.set_yticks(np.arange(len(labels)) + height * (len(names) - 1) / 2, labels)
    ax.invert_yaxis()
    ratio, log = train["imbalance_ratio"] or 1, train["log_scale"]
    if log:
        ax.set_xscale("log")
    ax.set_xlabel("rows" + (" (log scale)" if log else ""))
    scale = f" (log scale: ratio >= {LOG_SCALE_RATIO})" if log else ""
    ax.set_title(f"Label distribution: {train['classes']} classes, largest/smallest class {ratio:g}{scale}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_lengths(splits: dict[str, pd.DataFrame], unit: str, path: Path, model: dict | None = None) -> str:
    fig = figure()
    ax = fig.add_subplot()
    values = {name: frame[unit].dropna().to_numpy() for name, frame in splits.items()}
    values = {name: v for name, v in values.items() if len(v)}
    everything = np.concatenate(list(values.values())) if values else np.zeros(1)
    top = max(1.0, float(np.percentile(everything, 99.5)))  # a long tail would squeeze the histogram into one bar
    step = max(1, math.ceil(top / 60))  # whole-number bins: lengths are counts
    bins = np.arange(0, top + step + 1, step)
    for name, v in values.items():
        ax.hist(
            np.clip(v, 0, top), bins=bins, density=True, histtype="step", linewidth=2, label=f"{name} ({len(v):,})"
        )
    if model:
        ax.axvline(model["suggested_max_length"], color="black", linestyle="--", label="suggested max_length")
        if model["max_length_limit"] <= top:
            ax.axvline(model["max_length_limit"], color="red", linestyle=":", label="model limit")
    clipped = f" (longer texts counted at {top:.0f})" if top < everything.max() else ""
    ax.set_title(f"Text length in {unit} per split{clipped}")
    ax.set_xlabel(unit)
    ax.set_ylabel("share of texts (density)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def _plot_truncation(splits: dict[str, pd.DataFrame], model: dict, path: Path) -> str:
    fig = figure()
    ax = fig.add_subplot()
    limit = model["max_length_limit"]
    grid = np.arange(8, max(limit, max(TRUNCATION_POINTS)) + 1, 8)
    for name, frame in splits.items():
        lengths = np.sort(frame["tokens"].dropna().to_numpy())
        if len(lengths):
            # share of texts longer than each max_length: 1 - (texts <= L) / n
            ax.plot(grid, 100 * (1 - np.searchsorted(lengths, grid, side="right") / len(lengths)), label=name)
    ax.axvline(model["suggested_max_length"], color="black", linestyle="--", label="suggested max_length")
    ax.axvline(limit, color="red", linestyle=":", label=f"model limit {limit}")
    ax.set_xscale("log", base=2)
    ticks = [n for n in (8, 16, 32, *TRUNCATION_POINTS) if n <= grid[-1]]
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.set_xlabel("max_length (tokens)")
    ax.set_ylabel("% of texts truncated")
    ax.set_title(f"Truncation curve: suggested max_length {model['suggested_max_length']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
