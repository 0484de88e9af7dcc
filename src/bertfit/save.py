"""The save stage: a model directory written atomically (weights, tokenizer, card, metrics, validation records and
the report), so that all of it appears at once or none of it does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .backbone import quiet_transformers
from .card import ModelCard, write_model_files
from .checkpoint import estimate_bytes, storage_error
from .exceptions import BertfitError
from .files import atomic_directory
from .hub import write_readme
from .lexical import LexicalHead
from .report import build_report

__all__ = ["save_model"]

logger = logging.getLogger(__name__)


def save_model(
    path: str | Path,
    model,
    tokenizer,
    card: ModelCard,
    metrics: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    *,
    lexical: LexicalHead | None = None,
    overwrite: bool = False,
    then: str = "save again",
) -> Path:
    """Write a model directory: a standard Hugging Face one (``model.safetensors``, ``config.json``, tokenizer files)
    plus the files of :func:`bertfit.card.write_model_files`; ``report.html`` when metrics and records are given; and
    the Hub model card ``README.md`` (:mod:`bertfit.hub`); and the ``lexical`` head's files (:mod:`bertfit.lexical`).
    ``then`` ends the message of a full disk: what to do once space is free.

    Raises:
        OutputExistsError: ``path`` holds files and ``overwrite`` is False.
        StorageError: The disk is full or not writable (the message says how much space is needed).
    """
    path = Path(path)
    try:
        with atomic_directory(path, overwrite) as staging, quiet_transformers():
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            report = build_report(card, metrics, records) if metrics is not None and records is not None else None
            write_model_files(staging, card, metrics, records, report)
            if lexical is not None:
                lexical.save(staging)
            write_readme(staging, card, metrics, name=path.absolute().name)  # the Hub model card, README.md
    except BertfitError:
        raise
    except OSError as err:  # a full or read-only disk: one line, and the staging copy is already removed
        raise storage_error(err, path, "the model", estimate_bytes(model.state_dict()) + 2**20, then) from None
    logger.info("saved the model to %s", path)
    return path
