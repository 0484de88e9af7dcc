"""Token-budget batches: as many texts per training step as fit in a budget of padded tokens.

With a fixed batch size, a step over 32 long texts costs many times one over 32 short ones. Here every batch holds
texts of nearly equal length (sorted by length, ties broken at random each epoch) and as many of them as keep
``texts x longest length <= max_tokens``, so the cost per step is even and padding is close to zero. The batch
boundaries depend only on the sorted lengths, so every epoch has the same number of batches (the learning-rate
schedule needs that); the batches come in a new random order each epoch. fairseq batches by token budget the same
way (``batch_by_size``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from .exceptions import ConfigError

__all__ = ["TokenBudgetBatchSampler", "budget_batch_sizes"]


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
