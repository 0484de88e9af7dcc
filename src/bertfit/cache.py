"""The on-disk tokenization cache: a second run over the same texts, tokenizer, max_length (and stride, for
overlapping windows) skips tokenizing; and the same for the frozen-embedding baseline's vectors
(:func:`embeddings_cached`: the same encoder weights, texts, cut and precision skip its forward passes).

An entry is one ``.npz`` file named by the sha256 of the tokenizer's full definition (vocabulary, normalizer,
pre-tokenizer and post-processor, as the fast tokenizer serializes them), the cut, and the texts themselves; each
token column is stored as one flat int32 array plus row offsets. Entries are written atomically, so an interrupted
run leaves no half-written file, and a damaged entry is recomputed. The directory is ``$BERTFIT_CACHE`` or
``~/.cache/bertfit``; ``cache_dir="none"`` turns the cache off.

The cache holds at most ``$BERTFIT_CACHE_SIZE`` bytes (default 2G; suffixes K, M, G): after each write the least
recently used entries (by modification time, which a read refreshes) are removed until it fits. ``bertfit cache
info`` shows its size, ``bertfit cache clear`` empties it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import progress
from .files import atomic_file

__all__ = [
    "cache_directory",
    "tokenize_cached",
    "embeddings_cached",
    "encoder_digest",
    "cache_limit",
    "cache_entries",
    "evict",
    "clear_cache",
]

logger = logging.getLogger(__name__)

_FORMAT = 1  # bump when the file layout changes: old entries then simply miss
_MAPPING = "overflow_to_sample_mapping"
DEFAULT_LIMIT = "2G"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def cache_directory(cache_dir: str | None) -> Path | None:
    """Where token entries live: ``cache_dir``, else ``$BERTFIT_CACHE``, else ``~/.cache/bertfit``; None when the
    chosen one is 'none' (the flag's or the variable's: either turns the cache off)."""
    root = cache_dir or os.environ.get("BERTFIT_CACHE") or Path.home() / ".cache" / "bertfit"
    if str(root).lower() == "none":
        return None
    return Path(root) / "tokens"


def tokenize_cached(
    tokenizer,
    texts: Sequence[str],
    max_length: int,
    cache_dir: Path | None,
    *,
    stride: int | None = None,
    desc: str = "tokenizing",
) -> dict[str, list]:
    """``tokenizer(texts, truncation=True, max_length=max_length)`` as ``{column: one id list per text}``, read
    from the cache when this exact tokenization was done before.

    Args:
        tokenizer: A Hugging Face tokenizer; only fast tokenizers are cached (a slow one has no serialized form).
        texts: The texts, in order.
        max_length: The truncation length (the window size with ``stride``).
        cache_dir: From :func:`cache_directory`; None tokenizes without the cache.
        stride: Split every text into overlapping windows sharing ``stride`` tokens (the tokenizer's overflowing
            tokens) instead of truncating: one id list per window, and the column ``overflow_to_sample_mapping``
            holds each window's text index.
        desc: Label of the progress bar.
    """
    key = _key(tokenizer, texts, max_length, stride) if cache_dir is not None else None
    path = cache_dir / f"{key}.npz" if key else None
    encoded = _lookup(path, _read, f"the tokens of {len(texts)} texts")
    if encoded is not None:
        return encoded
    windows = {} if stride is None else {"stride": stride, "return_overflowing_tokens": True}
    encoded = progress.tokenize(tokenizer, texts, desc=desc, truncation=True, max_length=max_length, **windows)
    if path is not None:
        _store(path, cache_dir, lambda handle: _write(handle, encoded))
    return encoded


def encoder_digest(encoder) -> str:
    """The sha256 of an encoder's weights (names, shapes, dtypes, values): what its outputs depend on. About 0.2 s
    for MiniLM's 90 MB, 1 s for a bert-base."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy())  # the raw bytes, bf16 included
    return digest.hexdigest()


def embeddings_cached(
    compute, encoder: str, tokenizer, texts: Sequence[str], max_length: int, precision: str, cache_dir: Path | None
) -> np.ndarray:
    """``compute()`` (an ``(n_texts, dim)`` float32 array of ``texts``' embeddings), or the array it returned before
    for the same encoder weights (``encoder``: their :func:`encoder_digest`), tokenizer, texts, cut and precision,
    read from the cache."""
    tokens = _key(tokenizer, texts, max_length) if cache_dir is not None else None
    if tokens is None:
        return compute()
    header = {"format": _FORMAT, "kind": "embeddings", "encoder": encoder, "tokens": tokens, "precision": precision}
    path = cache_dir / f"{hashlib.sha256(json.dumps(header, sort_keys=True).encode()).hexdigest()}.npz"
    vectors = _lookup(path, _read_embeddings, f"the frozen embeddings of {len(texts)} texts")
    if vectors is not None:
        return vectors
    vectors = compute()
    _store(path, cache_dir, lambda handle: np.savez(handle, embeddings=vectors))
    return vectors


def _lookup(path: Path | None, read, what: str):
    """``read(path)`` of an entry that exists, else None; a damaged entry is None too (recomputed and replaced)."""
    if path is None or not path.is_file():
        return None
    try:
        value = read(path)
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring the damaged cache entry %s (%s); computing it again", path, err)
        return None
    os.utime(path)  # recently used: evicted last
    logger.info("read %s from the cache %s", what, path)
    return value


def _read_embeddings(path: Path) -> np.ndarray:
    with np.load(path) as stored:
        return stored["embeddings"]


def _store(path: Path, cache_dir: Path, write) -> None:
    try:
        with atomic_file(path, "wb") as handle:
            write(handle)
        evict(cache_dir, cache_limit())
    except OSError as err:  # a read-only or full disk costs the next run time, not this run
        logger.warning("could not write the cache entry %s: %s", path, err)


def cache_limit() -> int:
    """The cache's size limit in bytes: ``$BERTFIT_CACHE_SIZE`` (e.g. ``500M``, ``2G``, ``0``), default 2 GiB.

    Raises:
        ConfigError: The variable is not a size.
    """
    from .exceptions import ConfigError

    value = os.environ.get("BERTFIT_CACHE_SIZE", DEFAULT_LIMIT).strip().upper().removesuffix("B")
    number, unit = value.rstrip("KMGT"), value[len(value.rstrip("KMGT")) :]
    try:
        return int(float(number) * _UNITS[unit])
    except (ValueError, KeyError):
        raise ConfigError(f"BERTFIT_CACHE_SIZE must be a size such as 500M or 2G, got {value!r}") from None


def cache_entries(cache_dir: Path | None) -> list[Path]:
    """The cache's entries, least recently used first."""
    if cache_dir is None or not cache_dir.is_dir():
        return []
    return sorted(cache_dir.glob("*.npz"), key=lambda p: p.stat().st_mtime)


def evict(cache_dir: Path, limit: int) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most ``limit`` bytes; returns them."""
    entries = cache_entries(cache_dir)
    sizes = {entry: entry.stat().st_size for entry in entries}
    total, removed = sum(sizes.values()), []
    for entry in entries:
        if total <= limit:
            break
        entry.unlink(missing_ok=True)
        total -= sizes[entry]
        removed.append(entry)
    if removed:
        logger.info("removed %d cache entries (least recently used) to stay within %d bytes", len(removed), limit)
    return removed


def clear_cache(cache_dir: Path | None) -> tuple[int, int]:
    """Delete every entry; returns ``(entries, bytes)`` removed."""
    entries = cache_entries(cache_dir)
    size = sum(entry.stat().st_size for entry in entries)
    for entry in entries:
        entry.unlink(missing_ok=True)
    return len(entries), size


def _key(tokenizer, texts: Sequence[str], max_length: int, stride: int | None = None) -> str | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    digest = hashlib.sha256()
    header = {"format": _FORMAT, "class": type(tokenizer).__name__, "max_length": max_length, "n": len(texts)}
    if stride is not None:  # absent for truncation, so that entries written before windows existed still hit
        header["stride"] = stride
    digest.update(json.dumps(header, sort_keys=True).encode())
    definition = json.loads(backend.to_str())
    for state in ("truncation", "padding"):  # set by the last call, not part of what the tokenizer is
        definition.pop(state, None)
    digest.update(json.dumps(definition, sort_keys=True).encode())
    _digest_texts(digest, texts)
    return digest.hexdigest()


def _digest_texts(digest, texts: Sequence[str]) -> None:
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little") + encoded)  # length-prefixed: no two text lists collide


def _write(handle, encoded: dict[str, list]) -> None:
    arrays = {}
    for column, rows in encoded.items():
        if column == _MAPPING:  # one int per window, not a list
            arrays[column] = np.asarray(rows, dtype=np.int64)
            continue
        arrays[f"{column}.offsets"] = np.cumsum([0] + [len(row) for row in rows], dtype=np.int64)
        arrays[f"{column}.values"] = np.fromiter((t for row in rows for t in row), dtype=np.int32)
    np.savez(handle, **arrays)


def _read(path: Path) -> dict[str, list[list[int]]]:
    with np.load(path) as stored:
        columns = sorted({name.rsplit(".", 1)[0] for name in stored.files if name != _MAPPING})
        encoded = {_MAPPING: stored[_MAPPING].tolist()} if _MAPPING in stored.files else {}
        for column in columns:
            offsets = stored[f"{column}.offsets"].tolist()
            values = stored[f"{column}.values"].tolist()
            encoded[column] = [values[a:b] for a, b in zip(offsets[:-1], offsets[1:])]
    return encoded
