"""Progress bars with ETA (tqdm) for tokenization, training, evaluation and prediction.

Bars show only when stderr is a terminal and :func:`set_quiet` has not turned them off (the CLI's ``--quiet``), so
logs and captured output stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["set_quiet", "enabled", "bar", "tokenize"]

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every bertfit progress bar off (True) or back to automatic (False)."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """Whether progress bars are shown: not quiet, and stderr is a terminal."""
    return not _quiet and sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it") -> Any:
    """A tqdm bar on stderr that disappears when done; a silent pass-through when bars are off."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, disable=not enabled(), file=sys.stderr)


def tokenize(tokenizer, texts: Sequence[str], *, desc: str = "tokenizing", batch_size: int = 4096, **kwargs) -> dict:
    """``tokenizer(texts, **kwargs)`` in batches with a progress bar; returns ``{key: list per text}``."""
    out: dict[str, list] = {}
    with bar(desc=desc, total=len(texts), unit="text") as progress:
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start : start + batch_size]), **kwargs)
            for key, values in encoded.items():
                if key == "overflow_to_sample_mapping":  # window -> text index within this batch: make it global
                    values = [start + i for i in values]
                out.setdefault(key, []).extend(values)
            progress.update(min(batch_size, len(texts) - start))
    return out
