"""The row-sparse AdamW of the token-embedding table gives dense AdamW's result."""

from __future__ import annotations

import pytest
import torch

from bertfit.lazy_adam import LazyEmbedding


class _Model(torch.nn.Module):
    def __init__(self, vocab: int = 50, hidden: int = 8) -> None:
        super().__init__()
        self.embeddings = torch.nn.Embedding(vocab, hidden, padding_idx=0)
        self.head = torch.nn.Linear(hidden, 1)

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, module):
        self.embeddings = module

    def forward(self, ids):
        return self.head(torch.tanh(self.embeddings(ids))).sum()


def _batches(steps: int, vocab: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    # Few ids per batch, from a skewed vocabulary: rows are touched at irregular intervals, some never.
    weights = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    return [torch.multinomial(weights, 6, replacement=True, generator=generator).view(2, 3) for _ in range(steps)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_lazy_update_equals_dense_adamw_on_every_row(weight_decay):
    torch.manual_seed(0)
    dense, lazy = _Model(), _Model()
    lazy.load_state_dict(dense.state_dict())
    table = LazyEmbedding(lazy, weight_decay=weight_decay)
    dense_opt = torch.optim.AdamW(dense.embeddings.parameters(), lr=1e-2, weight_decay=weight_decay)
    schedule = [1e-2 * (1 - step / 60) for step in range(60)]  # a decaying learning rate, as training uses
    for step, ids in enumerate(_batches(60, 50)):
        for group in dense_opt.param_groups:
            group["lr"] = schedule[step]
        dense(ids).backward()
        dense_opt.step()
        dense_opt.zero_grad()
        lazy(ids).backward()
        table.step(schedule[step])
        lazy.head.zero_grad()
        dense.head.zero_grad()
        if step in (20, 59):
            table.flush()
            torch.testing.assert_close(table.weight, dense.embeddings.weight, rtol=1e-5, atol=1e-6)
    moments = dense_opt.state[dense.embeddings.weight]
    torch.testing.assert_close(table.exp_avg, moments["exp_avg"], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(table.exp_avg_sq, moments["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    assert not torch.equal(table.weight, _Model().embeddings.weight)


def test_only_the_touched_rows_are_written_until_a_flush():
    torch.manual_seed(0)
    model = _Model()
    before = model.embeddings.weight.detach().clone()
    table = LazyEmbedding(model, weight_decay=0.1)
    ids = torch.tensor([[3, 5, 5]])
    model(ids).backward()
    table.step(1e-2)
    changed = (table.weight != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 5]
    table.flush()  # the weight decay every other row owed
    assert bool((table.weight != before).all(dim=1)[1:].all())
    table.restore()
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding)
    assert model.embeddings.weight.requires_grad and model.embeddings.weight is table.weight
