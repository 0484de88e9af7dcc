"""Long documents: texts as token windows, and window logits aggregated back into one row per text.

``truncate`` keeps the first ``max_length`` tokens of a text: one window per text. ``chunk`` splits a text into
windows of ``max_length`` tokens whose contents overlap by ``stride`` tokens (the fast tokenizer's overflowing tokens,
so every window gets its own ``[CLS] ... [SEP]``); a text's logits are the mean (or per-class max) of its windows'
logits. Training, evaluation and every predictor (PyTorch, ONNX, the server) go through :func:`encode_windows` and
:func:`aggregate_logits` with the :class:`Windowing` saved in ``bertfit.json``, so a reloaded model scores whole
documents the way it was validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cache import tokenize_cached
from .exceptions import ConfigError, ModelError

__all__ = [
    "Windowing",
    "encode_windows",
    "cap_windows",
    "aggregate_logits",
    "resolve_stride",
    "LONG_TEXT_MODES",
    "AGGREGATES",
    "CHUNK_MAX_LENGTH",
]

LONG_TEXT_MODES = ("truncate", "chunk")
AGGREGATES = ("mean", "max")
# The longest window chunk mode picks by itself: attention cost grows with the window, and a document is covered by
# its windows either way (on 20 Newsgroups, 256-token windows beat truncation: README, Long documents).
CHUNK_MAX_LENGTH = 256
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Windowing:
    """How texts become model inputs, and how window logits become a text's logits.

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
        """The windowing saved in ``bertfit.json``; models saved without a ``long_text`` entry truncate."""
        rule = info.get("long_text") or {"mode": "truncate"}
        return cls(int(info["max_length"]), rule["mode"], int(rule.get("stride", 0)), rule.get("aggregate", "mean"))

    def to_info(self) -> dict[str, Any]:
        """The ``long_text`` entry of ``bertfit.json`` (``max_length`` is saved beside it)."""
        if self.mode == "truncate":
            return {"mode": "truncate"}
        return {"mode": self.mode, "stride": self.stride, "aggregate": self.aggregate}


def resolve_stride(stride: int | None, max_length: int) -> int:
    """The overlap in tokens of consecutive windows: ``stride``, or ``max_length // 4`` when it is None.

    Raises:
        ConfigError: ``stride`` is negative or above half of ``max_length`` (windows would mostly repeat).

    >>> resolve_stride(None, 256)
    64
    """
    if stride is None:
        return max_length // 4
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride <= max_length // 2:
        raise ConfigError(
            f"stride must be an integer from 0 to {max_length // 2} (half of max_length {max_length}), got "
            f"{stride!r}; lower --stride or raise --max-length"
        )
    return stride


def encode_windows(
    tokenizer, texts: Sequence[str], windowing: Windowing, max_windows: int = 0, cache_dir: Path | None = None
) -> tuple[dict[str, list], np.ndarray]:
    """Tokenize ``texts`` into windows: one per text when truncating, as many as needed to cover it when chunking.

    Args:
        tokenizer: A Hugging Face tokenizer (a fast one for chunk mode).
        texts: The texts.
        windowing: Window size, mode and stride.
        max_windows: Chunk mode: keep at most this many windows per text, evenly spaced (see :func:`cap_windows`);
            0 keeps all.
        cache_dir: Chunk mode: the tokenization cache (:func:`bertfit.cache.cache_directory`); None: no cache.

    Returns:
        ``(encoded, text_index)``: ``encoded`` maps the model's input names to one list of ids per window,
        ``text_index`` (shape ``(n_windows,)``, non-decreasing) gives the text of each window.

    Raises:
        ModelError: Chunk mode with a tokenizer that cannot return overflowing windows.
    """
    if windowing.mode == "truncate":
        encoded = tokenizer(list(texts), truncation=True, max_length=windowing.max_length)
        return {k: encoded[k] for k in _INPUT_KEYS if k in encoded}, np.arange(len(texts))
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"long_text 'chunk' needs a fast (Rust) tokenizer, and {type(tokenizer).__name__} is not one; "
            "use --long-text truncate or a model that ships a tokenizer.json"
        )
    encoded = tokenize_cached(tokenizer, texts, windowing.max_length, cache_dir, stride=windowing.stride)
    text_index = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
    keep = cap_windows(text_index, max_windows) if max_windows else np.arange(len(text_index))
    return {k: [encoded[k][i] for i in keep] for k in _INPUT_KEYS if k in encoded}, text_index[keep]


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
