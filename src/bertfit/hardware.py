"""Which arithmetic runs where: the one precision resolver, called once when a model is loaded or a run starts.

``auto`` picks bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs (Ampere and later), fp16 on older GPUs and fp32
elsewhere. The result is a :class:`Precision`, whose :meth:`~Precision.autocast` is the context every forward pass of
training, evaluation, prediction and the frozen-embedding baseline runs under.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from typing import NamedTuple

from .config import PRECISIONS
from .exceptions import ConfigError

__all__ = ["Precision", "resolve_precision", "default_device", "keep_freed_memory"]

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


# glibc's mallopt parameters (malloc.h): blocks above M_MMAP_THRESHOLD get their own mapping, unmapped when freed;
# free memory above M_TRIM_THRESHOLD at the top of the heap goes back to the kernel.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Have glibc's allocator keep freed blocks of up to ``threshold`` bytes for reuse instead of returning them to
    the kernel. The ``bertfit`` command calls it at start; a library caller may call it too (it is process-wide).

    Why: a CPU forward pass frees and allocates activations of a few MiB at every layer. glibc gives blocks above
    its mmap threshold (128 KiB at start, raised only as such blocks are freed) their own pages, so each new tensor
    is fresh memory whose every 4 KiB page faults on its first write. Measured on this project's 2-core VM (AMX):
    the first bf16 forward of a 128 x 31-token batch 508 ms -> 178 ms, and ``bertfit predict --input`` of 10,000
    sentences 9.8 s -> 8.7 s with 85% fewer page faults. The cost: memory freed inside the process is reused but
    not returned to the system until the process ends, and peak memory can grow with fragmentation (the same
    command: 0.84-1.02 GB against 0.80-0.85 GB).

    Returns:
        Whether the setting was made: False off Linux, with another C library, or when the environment already sets
        glibc's malloc options (``MALLOC_MMAP_THRESHOLD_`` and the like, or ``GLIBC_TUNABLES``), which are kept.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "malloc" in tunables or any(k in os.environ for k in _MALLOC_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl's mallopt does nothing
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trim = min(2 * threshold, 2**31 - 1)  # an int argument
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
