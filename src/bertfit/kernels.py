"""Cheaper training kernels for a CPU: dropout whose random mask costs a third of torch's, and the attention that uses
it, swapped into a transformers model for the training loop and swapped back after (:func:`cpu_training_kernels`).

Why: on this project's CPU, ``aten::bernoulli_`` (the random mask of every ``nn.Dropout`` and of the attention
probabilities' dropout inside ``scaled_dot_product_attention``) is the largest single cost of a training step: 24% of
a MiniLM step at batch 32 in the torch profiler, more than the matrix products of the forward pass. Torch draws one
random number per element, at about 6 ns each. :func:`dropout` draws 64 random bits per four elements instead (one
``random_`` over an int64 buffer read as int16: 16 bits per element, a drop probability within 1/65,536 of ``p``), 3.2x
faster for a 32 x 26 x 384 activation, and keeps the scaled mask for the backward pass. Attention probabilities get
the same dropout through :func:`attention`, the math of ``scaled_dot_product_attention`` with an explicit softmax
(registered with transformers' ``AttentionInterface``); with dropout off (evaluation) it hands over to transformers'
own SDPA function, so evaluation and prediction are unchanged.

Same distribution, not the same draws: a run with these kernels is as random as one without, seeded by torch's
generator (so ``--seed`` and checkpoint resumes stay exact), but not bit-identical to a run of the stock modules. On a
GPU the stock fused kernels are faster and stay.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["dropout", "Dropout", "attention", "cpu_training_kernels", "ATTENTION_NAME"]

logger = logging.getLogger(__name__)

ATTENTION_NAME = "bertfit_cpu"  # the name :func:`attention` is registered under in transformers
_INT16_SPAN = 1 << 16


class _MaskedScale(torch.autograd.Function):
    # x * mask, where mask is the keep mask scaled by 1 / (1 - p), in x's dtype; the backward multiplies by it again.
    @staticmethod
    def forward(ctx, x, p: float):
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
        draws = bits.view(torch.int16)[:n].view(x.shape)  # uniform over the 65,536 int16 values
        keep = draws >= round(p * _INT16_SPAN) - _INT16_SPAN // 2
        mask = keep.to(x.dtype).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout, as ``torch.nn.functional.dropout(x, p, training)``: each element zeroed with probability
    ``p`` (to 1/65,536), the others scaled by ``1 / (1 - p)``; the identity when not training or ``p`` is 0.

    >>> torch.equal(dropout(torch.ones(3), 0.5, training=False), torch.ones(3))
    True
    """
    if not training or p == 0.0:
        return x
    return _drop(x, p)


def _drop(x: torch.Tensor, p: float) -> torch.Tensor:
    return x * 0.0 if p >= 1.0 else _MaskedScale.apply(x, p)


class Dropout(nn.Dropout):
    """``nn.Dropout`` on :func:`dropout`'s cheaper mask (same ``p``, same ``training`` switch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """An attention function for transformers' ``AttentionInterface``: softmax(q k^T * scaling + mask) v, with
    :func:`dropout` on the probabilities. Anything but plain bidirectional attention with dropout (evaluation, a
    causal or grouped-query module, a position bias, soft-capping) goes to transformers' own SDPA function.

    ``query``, ``key``, ``value``: (batch, heads, length, head width); ``attention_mask``: None, a boolean mask
    (True: attend) or an additive float mask, broadcastable to (batch, heads, query length, key length). Returns
    ``(output, None)``, output (batch, query length, heads, head width), as transformers' functions do.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (
        dropout > 0.0
        and module.training
        and not getattr(module, "is_causal", False)
        and getattr(module, "num_key_value_groups", 1) == 1
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
    )
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling  # (batch, heads, query, key)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = _drop(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register() -> bool:
    # Register attention() and the SDPA mask under ATTENTION_NAME; False where this transformers lacks the interfaces.
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    except ImportError:
        return False
    AttentionInterface.register(ATTENTION_NAME, attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return True


@contextlib.contextmanager
def cpu_training_kernels(model: nn.Module, device: str) -> Iterator[None]:
    """Within the block, on a CPU: every plain ``nn.Dropout`` of ``model`` is a :class:`Dropout` of the same ``p``,
    and a model whose attention is transformers' SDPA function uses :func:`attention` instead; both are put back on
    leaving (the saved model is the stock one). Elsewhere (a GPU, another device) the block changes nothing.

    The parameters, their names and the eval-mode outputs are unchanged, so optimizers, checkpoints, DDP and
    ``torch.compile`` see the same model.
    """
    if device != "cpu":
        yield
        return
    swapped = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:  # not subclasses: they may do more than drop
                replacement = Dropout(child.p, child.inplace)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped.append((parent, name, child))
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    attention_swapped = previous == "sdpa" and _register()
    if attention_swapped:
        config._attn_implementation = ATTENTION_NAME
    logger.debug("cpu training kernels: %d dropout modules, attention %s", len(swapped), attention_swapped)
    try:
        yield
    finally:
        for parent, name, child in swapped:
            child.train(getattr(parent, name).training)
            setattr(parent, name, child)
        if attention_swapped:
            config._attn_implementation = previous
