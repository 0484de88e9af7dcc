"""Training batches: length-grouped batches of a fixed size, or token-budget batches, and their share per process.

Length-grouped batches (the default) shuffle the texts, cut them into mega-batches of 50 batches, sort each
mega-batch by length and cut it into batches, so that a batch pads its texts to nearly equal lengths (the Hugging
Face Trainer's ``group_by_length``); the batch holding the longest text comes first, so that a too large batch fails
at once rather than after minutes.

Token-budget batches: as many texts per training step as fit in a budget of padded tokens. With a fixed batch size,
a step over 32 long texts costs many times one over 32 short ones. Here every batch holds texts of nearly equal
length (sorted by length, ties broken at random each epoch) and as many of them as keep ``texts x longest length <=
max_tokens``, so the cost per step is even and padding is close to zero. The batch boundaries depend only on the
sorted lengths, so every epoch has the same number of batches (the learning-rate schedule needs that); the batches
come in a new random order each epoch. fairseq batches by token budget the same way (``batch_by_size``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from .exceptions import ConfigError

__all__ = ["TokenBudgetBatchSampler", "budget_batch_sizes", "length_grouped_batches", "shard_batches"]

MEGABATCH_MULT = 50


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[np.ndarray]:
    """Batches of ``batch_size`` indices of texts of similar length, in a random order fixed by ``seed``.

    >>> batches = length_grouped_batches([3, 40, 5, 38] * 50, 8, seed=0)
    >>> len(batches), sorted(np.concatenate(batches).tolist()) == list(range(200)), int(batches[0][0]) % 2
    (25, True, 1)
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    mult = max(1, min(len(lengths) // (batch_size * 4), MEGABATCH_MULT))
    size = mult * batch_size
    mega = [order[i : i + size] for i in range(0, len(order), size)]
    mega = [m[np.argsort(-lengths[m], kind="stable")] for m in mega]  # each by descending length
    longest = int(np.argmax([lengths[m[0]] for m in mega]))
    mega[0][0], mega[longest][0] = mega[longest][0], mega[0][0]  # the longest text in the first batch
    flat = np.concatenate(mega)
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]


def shard_batches(batches: list[np.ndarray], rank: int, world_size: int) -> list[np.ndarray]:
    """The batches of process ``rank`` of ``world_size``: every ``world_size``-th one, the list first padded with
    its own first batches to a multiple of ``world_size`` so that every process runs the same number of steps.

    >>> [b.tolist() for b in shard_batches([np.array([0]), np.array([1]), np.array([2])], 1, 2)]
    [[1], [0]]
    """
    if world_size <= 1:
        return batches
    missing = -len(batches) % world_size
    padded = batches + batches[:missing]
    return padded[rank::world_size]


def budget_batch_sizes(sorted_lengths: Sequence[int], max_tokens: int) -> list[int]:
    """The sizes of consecutive batches over ascending ``sorted_lengths`` with at most ``max_tokens`` padded tokens
    (batch size x longest length) each.

    >>> budget_batch_sizes([3, 3, 4, 10, 10], max_tokens=20)
    [3, 2]
    """
    sizes: list[int] = []
    size = 0
    for length in sorted_lengths:  # ascending: the text just added is the longest of its batch
        if size and (size + 1) * length > max_tokens:
            sizes.append(size)
            size = 0
        size += 1
    if size:
        sizes.append(size)
    return sizes


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose padded size (texts x longest length) stays within ``max_tokens``.

    Args:
        lengths: Token count of each text (after truncation).
        max_tokens: Padded tokens per batch; must hold the longest text.
        seed: Seed of the tie-breaking and of the batch order; the epoch is added to it.
        shuffle: Shuffle the batch order each epoch (training); False yields the batches from short to long.

    Raises:
        ConfigError: ``max_tokens`` cannot hold the longest text.

    >>> list(TokenBudgetBatchSampler([5, 1, 5, 2], max_tokens=10, shuffle=False))
    [[1, 3], [0, 2]]
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 0, shuffle: bool = True) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        longest = int(self.lengths.max()) if len(self.lengths) else 0
        if max_tokens < longest:
            raise ConfigError(
                f"max_tokens_per_batch {max_tokens} cannot hold the longest training text ({longest} tokens); "
                f"raise --max-tokens-per-batch to at least {longest} or lower --max-length"
            )
        self.max_tokens = max_tokens
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.sizes = budget_batch_sizes(np.sort(self.lengths), max_tokens)

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer before each epoch: a new tie-breaking and batch order."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sizes)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed + self.epoch)
        tie_break = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tie_break, self.lengths))  # by length, then by the random key
        batches = np.split(order, np.cumsum(self.sizes)[:-1])
        for k in rng.permutation(len(batches)) if self.shuffle else range(len(batches)):
            yield batches[k].tolist()
