"""The one feature path: texts -> model inputs (token windows) -> batched forward passes -> one output row per text.

Training, evaluation, every predictor (PyTorch, ONNX, the server) and the frozen-embedding baseline turn texts into
model inputs with :func:`encode` and run them with :func:`predict_texts`, under the :class:`Windowing` saved with the
model, so a reloaded model scores whole documents the way it was validated.

``truncate`` keeps the first ``max_length`` tokens of a text: one window per text. ``chunk`` splits a text into
windows of ``max_length`` tokens whose contents overlap by ``stride`` tokens (the fast tokenizer's overflowing tokens,
so every window gets its own ``[CLS] ... [SEP]``); a text's output is the mean (or per-column max) of its windows'.
Batches hold windows of similar length, padded to their own longest (never to ``max_length``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import progress
from .cache import tokenize_cached
from .config import AGGREGATES, CHUNK_MAX_LENGTH, LONG_TEXT_MODES, resolve_stride
from .exceptions import ConfigError, ModelError

__all__ = [
    "Windowing",
    "Encoded",
    "encode",
    "cap_windows",
    "aggregate_logits",
    "predict_texts",
    "window_outputs",
    "suggest_max_length",
    "choose_max_length",
    "LONG_TEXT_MODES",
    "AGGREGATES",
    "CHUNK_MAX_LENGTH",
    "resolve_stride",
]

logger = logging.getLogger(__name__)

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Windowing:
    """How texts become model inputs, and how window outputs become a text's output.

    Args:
        max_length: Tokens per window, special tokens included.
        mode: ``"truncate"`` (one window: the first ``max_length`` tokens) or ``"chunk"`` (overlapping windows).
        stride: Chunk mode: tokens shared by consecutive windows.
        aggregate: Chunk mode: ``"mean"`` or ``"max"`` (per class) of a text's window logits.

    >>> Windowing(128, "chunk", stride=32).to_info()
    {'mode': 'chunk', 'stride': 32, 'aggregate': 'mean'}
    """

    max_length: int
    mode: str = "truncate"
    stride: int = 0
    aggregate: str = "mean"

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Windowing:
        """The windowing of a ``bertfit.json`` mapping; models saved without a ``long_text`` entry truncate."""
        rule = info.get("long_text") or {"mode": "truncate"}
        return cls(int(info["max_length"]), rule["mode"], int(rule.get("stride", 0)), rule.get("aggregate", "mean"))

    def to_info(self) -> dict[str, Any]:
        """The ``long_text`` entry of ``bertfit.json`` (``max_length`` is saved beside it)."""
        if self.mode == "truncate":
            return {"mode": "truncate"}
        return {"mode": self.mode, "stride": self.stride, "aggregate": self.aggregate}


@dataclass
class Encoded:
    """Model inputs of ``n_texts`` texts: one id list per window in each column, and the text of every window.

    Attributes:
        columns: Input name (``input_ids``, ``attention_mask``, ``token_type_ids``) -> one id list per window.
        text_index: Shape ``(n_windows,)``, non-decreasing: the text of each window.
        n_texts: Number of texts.
    """

    columns: dict[str, list[list[int]]]
    text_index: np.ndarray
    n_texts: int

    def __len__(self) -> int:
        return len(self.text_index)

    def lengths(self) -> np.ndarray:
        """Tokens per window, shape ``(n_windows,)``."""
        return np.fromiter((len(ids) for ids in self.columns["input_ids"]), dtype=np.int64, count=len(self))

    def rows(self, targets: Sequence[Any]) -> list[dict[str, Any]]:
        """One dict per window with its inputs and ``labels``: ``targets[text]`` of its text (training features)."""
        return [
            {**{k: ids[i] for k, ids in self.columns.items()}, "labels": targets[text]}
            for i, text in enumerate(self.text_index)
        ]


def encode(
    tokenizer,
    texts: Sequence[str],
    windowing: Windowing,
    *,
    max_windows: int = 0,
    cache_dir: Path | None = None,
    reuse: dict[str, list] | None = None,
    desc: str = "tokenizing",
) -> Encoded:
    """Tokenize ``texts`` into windows: one per text when truncating, as many as cover it when chunking.

    Args:
        tokenizer: A Hugging Face tokenizer (a fast one for chunk mode).
        texts: The texts.
        windowing: Window size, mode and stride.
        max_windows: Chunk mode: keep at most this many windows per text, evenly spaced (see :func:`cap_windows`);
            0 keeps all.
        cache_dir: The tokenization cache (:func:`bertfit.cache.cache_directory`); None: no cache.
        reuse: ``texts`` already tokenized with a cut of at least ``max_length``: its rows that fit are kept as they
            are (one window each), only the longer ones are tokenized again (cut, or split into windows).
        desc: Label of the progress bar.

    Raises:
        ModelError: Chunk mode with a tokenizer that cannot return overflowing windows.
    """
    if windowing.mode == "truncate":
        encoded = _truncated(tokenizer, texts, windowing.max_length, cache_dir, reuse, desc)
        return Encoded({k: encoded[k] for k in INPUT_KEYS if k in encoded}, np.arange(len(texts)), len(texts))
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"long_text 'chunk' needs a fast (Rust) tokenizer, and {type(tokenizer).__name__} is not one; "
            "use --long-text truncate or a model that ships a tokenizer.json"
        )
    if reuse is not None:
        encoded = _windows_reusing(tokenizer, texts, windowing, cache_dir, reuse, desc)
    else:
        encoded = tokenize_cached(
            tokenizer, texts, windowing.max_length, cache_dir, stride=windowing.stride, desc=desc
        )
    text_index = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    keep = cap_windows(text_index, max_windows) if max_windows else np.arange(len(text_index))
    columns = {k: [encoded[k][i] for i in keep] for k in INPUT_KEYS if k in encoded}
    return Encoded(columns, text_index[keep], len(texts))


def _truncated(tokenizer, texts, max_length: int, cache_dir, reuse, desc: str) -> dict[str, list]:
    if reuse is None:
        return tokenize_cached(tokenizer, texts, max_length, cache_dir, desc=desc)
    encoded = {k: list(reuse[k]) for k in INPUT_KEYS if k in reuse}
    long_rows = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > max_length]
    if long_rows:
        redone = tokenizer([texts[i] for i in long_rows], truncation=True, max_length=max_length)
        for k in encoded:
            for j, i in enumerate(long_rows):
                encoded[k][i] = redone[k][j]
    return encoded


def _windows_reusing(tokenizer, texts, windowing: Windowing, cache_dir, reuse, desc: str) -> dict[str, list]:
    # A text shorter than a window is that window; the others are split (a row of exactly max_length tokens may have
    # been cut there by the first pass), and the windows of both kinds are merged back in text order.
    keys = [k for k in INPUT_KEYS if k in reuse]
    long_rows = [i for i, ids in enumerate(reuse["input_ids"]) if len(ids) >= windowing.max_length]
    split = {k: [] for k in [*keys, "overflow_to_sample_mapping"]}
    if long_rows:
        long_texts = [texts[i] for i in long_rows]
        split = tokenize_cached(
            tokenizer, long_texts, windowing.max_length, cache_dir, stride=windowing.stride, desc=desc
        )
    by_text: dict[int, list[int]] = {}
    for window, position in enumerate(split["overflow_to_sample_mapping"]):
        by_text.setdefault(long_rows[position], []).append(window)
    out = {k: [] for k in [*keys, "overflow_to_sample_mapping"]}
    for i in range(len(texts)):
        for k in keys:
            out[k].extend([split[k][w] for w in by_text[i]] if i in by_text else [reuse[k][i]])
        out["overflow_to_sample_mapping"].extend([i] * len(by_text.get(i, [0])))
    return out


def cap_windows(text_index: np.ndarray, max_windows: int) -> np.ndarray:
    """Positions of the windows to keep so that no text has more than ``max_windows``: for a longer text, windows
    evenly spaced from its first to its last.

    >>> cap_windows(np.array([0, 1, 1, 1, 1, 1]), 3).tolist()
    [0, 1, 3, 5]
    """
    if len(text_index) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, text_index[1:] != text_index[:-1]])  # first window of each text
    counts = np.diff(np.r_[starts, len(text_index)])
    kept = [
        start + (np.arange(count) if count <= max_windows else np.linspace(0, count - 1, max_windows).round())
        for start, count in zip(starts, counts)
    ]
    return np.concatenate(kept).astype(np.int64)


def aggregate_logits(
    window_logits: np.ndarray, text_index: np.ndarray, n_texts: int, rule: str = "mean"
) -> np.ndarray:
    """Each text's logits from its windows' logits, in any window order.

    Args:
        window_logits: Shape ``(n_windows, n_labels)``.
        text_index: Shape ``(n_windows,)``: the text (0 to ``n_texts - 1``) of each window; every text has one.
        n_texts: Number of texts.
        rule: ``"mean"`` or ``"max"`` (per class) over a text's windows.

    Returns:
        Shape ``(n_texts, n_labels)``, the dtype of ``window_logits``; rows in text order.

    >>> aggregate_logits(np.array([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0]]), np.array([0, 0, 1]), 2).tolist()
    [[2.0, -1.0], [5.0, 5.0]]
    """
    if rule not in AGGREGATES:
        raise ConfigError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {rule!r}")
    counts = np.bincount(text_index, minlength=n_texts)
    if (counts == 1).all():  # one window per text (truncate mode, short texts): reorder only, no arithmetic
        out = np.empty_like(window_logits)
        out[text_index] = window_logits
        return out
    # float64 sums of float32 logits are exact in practice, so the mean does not depend on the windows' order.
    values = window_logits.astype(np.float64)
    if rule == "max":
        out = np.full((n_texts, values.shape[1]), -np.inf)
        np.maximum.at(out, text_index, values)
    else:
        out = np.zeros((n_texts, values.shape[1]))
        np.add.at(out, text_index, values)
        out /= counts[:, None]
    return out.astype(window_logits.dtype)


def window_outputs(
    tokenizer, encoded: Encoded, forward: Callable[[Any], np.ndarray], width: int, batch_size: int, *, tensors: str
) -> np.ndarray:
    """``forward(padded_batch) -> (batch, width)`` over all windows, in batches of similar length (little padding).

    Returns:
        Shape ``(n_windows, width)``, float32, rows in window order.
    """
    order = np.argsort(encoded.lengths(), kind="stable")
    out = np.empty((len(order), width), dtype=np.float32)
    for start in progress.bar(range(0, len(order), batch_size), desc="predicting", unit="batch"):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({k: [ids[i] for i in idx] for k, ids in encoded.columns.items()}, return_tensors=tensors)
        out[idx] = forward(batch)
    return out


def predict_texts(
    tokenizer,
    texts: list[str],
    forward: Callable[[Any], np.ndarray],
    windowing: Windowing,
    width: int,
    batch_size: int,
    *,
    tensors: str,
) -> np.ndarray:
    """One output row per text from ``forward(padded_batch) -> (batch, width)``, rows in input order.

    Tokenizes once into windows (see :func:`encode`), runs :func:`window_outputs` and aggregates each text's
    windows by ``windowing.aggregate``; ``tensors`` is the tokenizer's ``return_tensors`` ("pt" for PyTorch, "np" for
    onnxruntime).

    Raises:
        TypeError: An item of ``texts`` is not a string.
    """
    if not texts:
        return np.zeros((0, width), dtype=np.float32)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    encoded = encode(tokenizer, texts, windowing)
    outputs = window_outputs(tokenizer, encoded, forward, width, batch_size, tensors=tensors)
    return aggregate_logits(outputs, encoded.text_index, len(texts), windowing.aggregate)


def suggest_max_length(lengths: np.ndarray, limit: int) -> int:
    """The 99th percentile of token counts, rounded up to a multiple of 8, at least 16, at most ``limit``.

    >>> suggest_max_length(np.array([10, 20, 30, 41]), 512)
    48
    """
    if len(lengths) == 0:
        return min(limit, 16)
    p99 = float(np.percentile(lengths, 99))
    return int(min(limit, max(16, 8 * math.ceil(p99 / 8))))


def choose_max_length(lengths: Sequence[int], limit: int, long_text: str = "truncate") -> int:
    """The 99th percentile of the token counts ``lengths`` (of texts cut at ``limit``), rounded up to a multiple of 8,
    at most ``limit`` (and at most ``CHUNK_MAX_LENGTH`` when ``long_text`` is "chunk": the window size); logs the
    choice and how many texts it truncates or splits.

    A text cut at ``limit`` counts ``limit`` tokens whatever its true length, so when the choice is ``limit`` itself
    the texts that reach it are the ones counted as longer (a text of exactly ``limit`` tokens, counted too, is rare).

    >>> choose_max_length([10] * 90 + [64] * 10, 64, "chunk")  # 10 texts reach the limit: split into windows
    64
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    cap = limit if long_text == "truncate" else min(limit, CHUNK_MAX_LENGTH)
    chosen = suggest_max_length(lengths, cap)
    at_limit = chosen >= limit  # the cut hides how far past the limit a text runs
    longer = int((lengths >= limit).sum() if at_limit else (lengths > chosen).sum())
    p99 = float(np.percentile(lengths, 99)) if len(lengths) else 0.0
    logger.info(
        "max_length %d: the 99th percentile of training token counts (%s), capped at %s; %d training texts "
        "(%.1f%%) %s %s (set --max-length to change)",
        chosen,
        f"{limit} or more: texts were cut there" if at_limit and p99 >= limit else f"{p99:.0f}",
        f"the model limit {limit}" if cap == limit else f"{cap} with long_text chunk",
        longer,
        100 * longer / max(len(lengths), 1),
        f"reach the model limit of {limit} tokens and are" if at_limit else "are",
        "truncated" if long_text == "truncate" else "split into windows",
    )
    return chosen
