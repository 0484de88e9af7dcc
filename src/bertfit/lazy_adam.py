"""A row-sparse AdamW for the token-embedding table that gives dense AdamW's result at a fraction of its cost.

A batch touches a few hundred of the table's rows (30,522 for BERT's vocabulary, 11.7M of MiniLM's 22.7M weights),
yet dense AdamW reads and writes every row, its two moments and a dense gradient every step. Plain lazy Adam
(TensorFlow's LazyAdam, torch's SparseAdam) updates only the touched rows, but it is not the same optimizer: dense
AdamW keeps moving a row in the direction of its momentum for many steps after its last gradient (the moments decay,
the update ``m / sqrt(v)`` does not), and decays every row's weight. On rarely seen tokens lazy Adam therefore
learns far less, which on a small random model was the difference between learning a word and not.

:class:`LazyEmbedding` does the lazy thing and then settles the debt exactly: it records, per row, the step at which
the row was last brought up to date, and when a batch touches the row again (or before an evaluation, for all rows:
:meth:`LazyEmbedding.flush`) it first applies in closed form what dense AdamW would have done in the steps between:

- the weight decay ``prod_j (1 - lr_j * wd)`` (through a running sum of ``log(1 - lr_j * wd)``);
- the coasting updates ``sum_j lr_j * m_hat_j / sqrt(v_hat_j)``: with a zero gradient ``m`` decays by ``b1`` and
  ``v`` by ``b2`` per step, so each update is ``(m / sqrt(v)) * (b1 / sqrt(b2))^k`` times the step's learning rate
  and bias corrections: a scalar per (last step, now) pair, computed for the distinct last steps of a batch's rows
  over the :data:`HORIZON` steps after them (``(b1 / sqrt(b2))^300`` is 2e-14: later terms vanish);
- the moments' decay ``b1^k`` and ``b2^k``.

The one approximation: dense AdamW adds ``eps`` (1e-8) to ``sqrt(v_hat_j)`` at every skipped step, a quantity that
changes by at most 16% over the horizon; the closed form takes its value at the first skipped step. Where ``sqrt(v)``
is far above 1e-8 eps does not matter at all, and where it is not (a gradient element below about 1e-7) the two
agree to about 1e-5 of the weight (``tests/test_lazy_adam.py`` checks the whole table against
``torch.optim.AdamW``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["LazyEmbedding", "HORIZON"]

HORIZON = 300  # skipped steps whose coasting update is counted; (0.9 / sqrt(0.999)) ** 300 = 2e-14


class LazyEmbedding(torch.nn.Module):
    """A model's token-embedding table trained with a row-sparse AdamW whose result equals dense AdamW's.

    Installed in place of ``model.get_input_embeddings()`` (the same weight Parameter, so state-dict keys and saving
    are unchanged); :meth:`restore` puts the original module back. In training mode a forward pass gathers the rows
    of the batch's token ids into a small leaf tensor whose gradient :meth:`step` applies.

    Args:
        model: A model whose input embeddings are an ``nn.Embedding``.
        weight_decay: AdamW's decoupled weight decay.
        betas: AdamW's moment decays.
        eps: AdamW's epsilon.

    >>> lazy = LazyEmbedding(model, weight_decay=0.01)  # doctest: +SKIP
    >>> loss.backward(); lazy.step(lr=1e-4); lazy.flush()  # doctest: +SKIP
    """

    def __init__(self, model, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        self.owner = [model, model.get_input_embeddings()]  # a list: neither is registered as a submodule
        self.weight = self.owner[1].weight
        self.padding_idx = self.owner[1].padding_idx
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        self.exp_avg = torch.zeros_like(self.weight)
        self.exp_avg_sq = torch.zeros_like(self.weight)
        self.last = torch.zeros(self.weight.shape[0], dtype=torch.int64)  # step each row is up to date with
        self.steps = 0
        # Per step j (index 0: before training), float64: the learning rate, the bias corrections
        # sqrt(1 - b2^j) / (1 - b1^j), and the running sum of log(1 - lr_j * wd). Grown by doubling.
        self._history = torch.zeros(3, 1024, dtype=torch.float64)
        self.rows: torch.Tensor | None = None
        self.ids: torch.Tensor | None = None
        self.weight.requires_grad_(False)  # no dense gradient
        model.set_input_embeddings(self)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return torch.nn.functional.embedding(input_ids, self.weight, self.padding_idx)
        ids, inverse = torch.unique(input_ids, return_inverse=True)  # (n_unique,), input_ids.shape
        with torch.no_grad():  # the rows as dense AdamW has them now: the forward pass must see those values
            self._store(ids, *self._caught_up(ids, self.steps), self.steps)
        self.ids, self.rows = ids, self.weight.detach()[ids].requires_grad_()
        # A lookup rather than rows[inverse]: the backward of advanced indexing (index_put_ with accumulate) sums a
        # row's gradients in an order that varies with thread timing on a CPU, so two runs of one seed differed.
        return torch.nn.functional.embedding(inverse, self.rows)  # (batch, seq, hidden)

    @torch.no_grad()
    def step(self, lr: float) -> None:
        """One AdamW step at learning rate ``lr`` on the rows the last forward pass used (after bringing them up to
        date); the other rows owe this step until they are next touched or flushed."""
        b1, b2 = self.betas
        self.steps += 1
        t = self.steps
        if t >= self._history.shape[1]:
            self._history = torch.cat([self._history, torch.zeros_like(self._history)], dim=1)
        log_decay = float(self._history[2, t - 1]) + math.log1p(-lr * self.weight_decay)
        self._history[:, t] = torch.tensor([lr, math.sqrt(1 - b2**t) / (1 - b1**t), log_decay])
        if self.rows is None or self.rows.grad is None:
            return
        ids, grad = self.ids, self.rows.grad
        if self.padding_idx is not None:  # as nn.Embedding: the padding row gets no gradient
            grad[ids == self.padding_idx] = 0
        rows, exp_avg, exp_avg_sq = self.weight[ids], self.exp_avg[ids], self.exp_avg_sq[ids]  # up to date: forward
        rows.mul_(1 - lr * self.weight_decay)
        exp_avg.lerp_(grad, 1 - b1)
        exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = (exp_avg_sq.sqrt() / math.sqrt(1 - b2**t)).add_(self.eps)
        rows.addcdiv_(exp_avg, denom, value=-lr / (1 - b1**t))
        self._store(ids, rows, exp_avg, exp_avg_sq, t)
        self.rows = self.ids = None

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row up to date with the last step: the table is then exactly what dense AdamW gives."""
        ids = torch.nonzero(self.last < self.steps).squeeze(1)
        if len(ids):
            self._store(ids, *self._caught_up(ids, self.steps), self.steps)

    def state_dict_(self) -> dict:
        """The optimizer state (moments, each row's step, the step history) for a checkpoint; the table itself is in
        the model's state dict."""
        return {
            "exp_avg": self.exp_avg,
            "exp_avg_sq": self.exp_avg_sq,
            "last": self.last,
            "steps": self.steps,
            "history": self._history[:, : self.steps + 1],
        }

    def load_state_dict_(self, state: dict) -> None:
        """Continue from :meth:`state_dict_`."""
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.last.copy_(state["last"])
        self.steps = int(state["steps"])
        history = state["history"]
        self._history = torch.zeros(3, max(1024, 2 * history.shape[1]), dtype=torch.float64)
        self._history[:, : history.shape[1]] = history

    def restore(self) -> None:
        """Flush, and put the model's own embedding module back (with the trained table)."""
        self.flush()
        self.weight.requires_grad_(True)
        self.owner[0].set_input_embeddings(self.owner[1])

    def _caught_up(self, ids: torch.Tensor, now: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Rows ids, their moments, advanced from their last step to ``now`` as dense AdamW with zero gradients would.
        rows, exp_avg, exp_avg_sq = self.weight[ids], self.exp_avg[ids], self.exp_avg_sq[ids]
        last = self.last[ids]
        behind = last < now
        if not bool(behind.any()):
            return rows, exp_avg, exp_avg_sq
        b1, b2 = self.betas
        log_decay = self._history[2]
        starts, inverse = torch.unique(last, return_inverse=True)
        coast = self._coasting(starts, now)[inverse].to(rows.dtype)[:, None]  # (n_rows, 1)
        gap = (now - last).to(torch.float64)[:, None]
        decay = torch.exp(log_decay[now] - log_decay[last]).to(rows.dtype)[:, None]
        # eps as dense AdamW adds it at the first skipped step, in the units of m / sqrt(v): see the module docstring.
        eps = (self.eps * torch.sqrt((1 - b2 ** (last + 1).to(torch.float64)) / b2)).to(rows.dtype)[:, None]
        rows.mul_(decay).sub_(coast * exp_avg / (exp_avg_sq.sqrt() + eps))
        exp_avg.mul_((b1**gap).to(rows.dtype))
        exp_avg_sq.mul_((b2**gap).to(rows.dtype))
        return rows, exp_avg, exp_avg_sq

    def _coasting(self, starts: torch.Tensor, now: int) -> torch.Tensor:
        # For each last step s: sum over j in (s, now] of lr_j * corr_j * (b1 / sqrt(b2))^(j - s) * decay(j -> now),
        # the factor of m / sqrt(v) that dense AdamW moved a row by in those steps. Shape (n_starts,), float64.
        b1, b2 = self.betas
        offsets = torch.arange(1, HORIZON + 1, dtype=torch.int64)
        steps = starts[:, None] + offsets[None, :]  # (n_starts, HORIZON)
        valid = steps <= now
        steps = steps.clamp(max=now)
        lr, corr, log_decay = self._history[0][steps], self._history[1][steps], self._history[2]
        ratio = (b1 / math.sqrt(b2)) ** offsets.to(torch.float64)
        decay = torch.exp(log_decay[now] - log_decay[steps])  # the decay of the steps after j
        return (lr * corr * ratio * decay * valid).sum(1)

    def _store(self, ids, rows, exp_avg, exp_avg_sq, step: int) -> None:
        self.weight.index_copy_(0, ids, rows)
        self.exp_avg.index_copy_(0, ids, exp_avg)
        self.exp_avg_sq.index_copy_(0, ids, exp_avg_sq)
        self.last[ids] = step
