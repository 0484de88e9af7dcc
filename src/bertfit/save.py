"""The save stage: a model directory written atomically (weights, tokenizer, card, metrics, validation records and
the report), so that all of it appears at once or none of it does."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .backbone import quiet_transformers
from .card import ModelCard, write_model_files
from .files import atomic_directory
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
    overwrite: bool = False,
) -> Path:
    """Write a model directory: a standard Hugging Face one (``model.safetensors``, ``config.json``, tokenizer files)
    plus the files of :func:`bertfit.card.write_model_files`; ``report.html`` when metrics and records are given.

    Raises:
        OutputExistsError: ``path`` holds files and ``overwrite`` is False.
    """
    path = Path(path)
    with atomic_directory(path, overwrite) as staging, quiet_transformers():
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        report = build_report(card, metrics, records) if metrics is not None and records is not None else None
        write_model_files(staging, card, metrics, records, report)
    logger.info("saved the model to %s", path)
    return path
