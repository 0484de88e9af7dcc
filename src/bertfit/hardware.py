"""Which arithmetic runs where: the one precision resolver, called once when a model is loaded or a run starts.

``auto`` picks bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs (Ampere and later), fp16 on older GPUs and fp32
elsewhere. The result is a :class:`Precision`, whose :meth:`~Precision.autocast` is the context every forward pass of
training, evaluation, prediction and the frozen-embedding baseline runs under.
"""

from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

from .config import PRECISIONS
from .exceptions import ConfigError

__all__ = ["Precision", "resolve_precision", "default_device"]

logger = logging.getLogger(__name__)


class Precision(NamedTuple):
    """A resolved precision: ``name`` is ``bf16``, ``fp16`` or ``fp32``, ``device`` e.g. ``cpu`` or ``cuda``.

    >>> Precision("fp32", "cpu") == ("fp32", "cpu")
    True
    """

    name: str
    device: str

    def autocast(self):
        """A context running a forward pass under bf16/fp16 autocast for those precisions, as it is for fp32."""
        import torch

        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(self.device.split(":")[0], dtype=dtype)


def default_device() -> str:
    """``cuda`` when a CUDA GPU is available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_precision(requested: str, device: str | None = None) -> Precision:
    """The arithmetic and device for ``requested`` precision.

    Args:
        requested: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        device: ``cpu`` or ``cuda``; default: CUDA when available.

    Returns:
        The resolved precision, e.g. ``Precision("bf16", "cpu")``.

    Raises:
        ConfigError: An unknown precision, or fp16 asked for without a CUDA GPU.
    """
    import torch

    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    device = device or default_device()
    on_gpu = device.startswith("cuda")
    if on_gpu:
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if requested == "auto":
        return Precision("bf16" if bf16 else ("fp16" if on_gpu else "fp32"), device)
    if requested == "fp16" and not on_gpu:
        raise ConfigError("precision fp16 needs a CUDA GPU and none is available; use --precision bf16 or fp32")
    if requested == "bf16" and not bf16:
        logger.warning("precision bf16 was asked for but this %s has no native bf16 support; it will be slow", device)
    return Precision(requested, device)
