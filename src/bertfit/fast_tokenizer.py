"""transformers' fast tokenizer where bertfit's feature path uses it, on the Rust ``tokenizers`` library alone: it
loads in milliseconds, where importing transformers' tokenizer classes takes about a second (see
:mod:`bertfit.native`). Used for BERT tokenizers, which it reproduces exactly (the tests compare ids, windows and
padding with transformers'); any other tokenizer loads with transformers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FastTokenizer", "load_fast_tokenizer"]


class FastTokenizer:
    """transformers' fast tokenizer where bertfit's feature path uses it, on a ``tokenizers.Tokenizer`` alone.

    Calling it with ``truncation=True, max_length=...`` (and ``stride``, ``return_overflowing_tokens``: windows)
    returns the same columns transformers does (``input_ids``, ``token_type_ids``, ``attention_mask``,
    ``overflow_to_sample_mapping``), and :meth:`pad` pads a batch of them on the right.
    """

    is_fast = True

    def __init__(
        self,
        backend,
        *,
        pad_token_id: int,
        model_max_length: int,
        truncation_side: str = "right",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.backend_tokenizer = backend
        self.config = dict(config or {})  # tokenizer_config.json as read
        self.pad_token_id = pad_token_id
        self.pad_token_type_id = 0
        self.model_max_length = model_max_length
        self.truncation_side = truncation_side
        self.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
        backend.no_padding()
        backend.no_truncation()

    def __call__(
        self,
        texts: Sequence[str],
        *,
        truncation: bool = False,
        max_length: int | None = None,
        stride: int = 0,
        return_overflowing_tokens: bool = False,
    ) -> dict[str, list]:
        backend = self.backend_tokenizer
        if truncation:
            length = max_length if max_length is not None else self.model_max_length
            backend.enable_truncation(length, stride=stride, strategy="longest_first", direction=self.truncation_side)
        else:
            backend.no_truncation()
        encodings = backend.encode_batch(list(texts), add_special_tokens=True)
        columns: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        mapping: list[int] = []
        for i, encoding in enumerate(encodings):
            windows = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            for window in windows:
                columns["input_ids"].append(window.ids)
                columns["token_type_ids"].append(window.type_ids)
                columns["attention_mask"].append(window.attention_mask)
                mapping.append(i)
        if return_overflowing_tokens:
            columns["overflow_to_sample_mapping"] = mapping
        return columns

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` (without the truncation a call left set) and ``tokenizer_config.json``: the
        files transformers' fast tokenizer reads back as this one."""
        from tokenizers import Tokenizer

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        backend = Tokenizer.from_str(self.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        backend.save(str(path / "tokenizer.json"))
        config = {**self.config, "model_max_length": self.model_max_length}  # the rest as load_fast_tokenizer read
        text = json.dumps(dict(sorted(config.items())), indent=2, ensure_ascii=False) + "\n"
        (path / "tokenizer_config.json").write_text(text, encoding="utf-8")

    def pad(self, columns: dict[str, list[list[int]]], return_tensors: str = "pt") -> dict[str, Any]:
        """Right-pad each column to the longest row: ``pad_token_id`` for ids, 0 for the mask and token types."""
        rows = columns["input_ids"]
        longest = max((len(ids) for ids in rows), default=0)
        out = {}
        for key, values in columns.items():
            fill = (
                self.pad_token_id if key == "input_ids" else self.pad_token_type_id if key == "token_type_ids" else 0
            )
            array = np.full((len(values), longest), fill, dtype=np.int64)
            for row, ids in zip(array, values):
                row[: len(ids)] = ids
            out[key] = array
        if "attention_mask" not in out:
            mask = np.zeros((len(rows), longest), dtype=np.int64)
            for row, ids in zip(mask, rows):
                row[: len(ids)] = 1
            out["attention_mask"] = mask
        if return_tensors == "pt":
            import torch

            return {key: torch.from_numpy(array) for key, array in out.items()}
        return out


def load_fast_tokenizer(path: str | Path) -> FastTokenizer | None:
    """The :class:`FastTokenizer` of a model directory whose tokenizer is BERT's (``tokenizer.json`` and
    ``tokenizer_config.json``, as transformers saves them), or None for any other (load that one with transformers).

    >>> load_fast_tokenizer("no-such-directory") is None
    True
    """
    path = Path(path)
    vocabulary = path / "tokenizer.json"
    try:
        tokenizer_config = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(tokenizer_config, dict) or not vocabulary.is_file():
        return None
    if tokenizer_config.get("padding_side", "right") != "right" or tokenizer_config.get("tokenizer_class") not in (
        "BertTokenizer",
        "BertTokenizerFast",
    ):
        return None
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(vocabulary))
    except Exception:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot read
        return None
    pad_id = backend.token_to_id(str(tokenizer_config.get("pad_token", "[PAD]")))
    limit = tokenizer_config.get("model_max_length", 512)
    if pad_id is None or not isinstance(limit, int | float) or limit <= 0:
        return None
    side = tokenizer_config.get("truncation_side", "right")
    limit = int(min(limit, 1e9))
    return FastTokenizer(
        backend, pad_token_id=pad_id, model_max_length=limit, truncation_side=side, config=tokenizer_config
    )
