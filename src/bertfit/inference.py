"""PyTorch forward passes over the feature path: a classifier's logits and an encoder's mean-pooled embeddings.

Both run :func:`bertfit.features.predict_texts` (windows, length-sorted batches, per-text aggregation) under
``torch.inference_mode`` and the autocast of a resolved :class:`~bertfit.hardware.Precision`.
"""

from __future__ import annotations

import numpy as np

from .features import Windowing, predict_texts
from .hardware import Precision

__all__ = ["torch_logits", "torch_embeddings"]


def torch_logits(
    model, tokenizer, texts: list[str], windowing: Windowing, precision: Precision, batch_size: int
) -> np.ndarray:
    """The logits of a sequence classifier, shape ``(n_texts, n_labels)``, rows in input order."""
    import torch

    def forward(batch) -> np.ndarray:
        batch = {k: v.to(precision.device) for k, v in batch.items()}
        return model(**batch).logits.float().cpu().numpy()  # (batch, n_labels)

    with torch.inference_mode(), precision.autocast():
        return predict_texts(tokenizer, texts, forward, windowing, model.config.num_labels, batch_size, tensors="pt")


def torch_embeddings(
    encoder,
    tokenizer,
    texts: list[str],
    max_length: int,
    precision: Precision,
    batch_size: int,
    *,
    autocast: bool = True,
) -> np.ndarray:
    """Mean-pooled last hidden states of an encoder (texts truncated to ``max_length``), ``(n_texts, hidden)``,
    under ``precision``'s autocast, or in the encoder's own dtype with ``autocast=False`` (a bf16 copy of it); the
    mean is taken in fp32 either way."""
    import contextlib

    import torch

    def forward(batch) -> np.ndarray:
        batch = {k: v.to(precision.device) for k, v in batch.items()}
        hidden = encoder(**batch).last_hidden_state.float()  # (batch, seq, hidden)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # mean over real tokens
        return pooled.cpu().numpy()

    width = encoder.config.hidden_size
    with torch.inference_mode(), precision.autocast() if autocast else contextlib.nullcontext():
        return predict_texts(tokenizer, texts, forward, Windowing(max_length), width, batch_size, tensors="pt")
