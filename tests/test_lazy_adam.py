"""The row-sparse AdamW of the token-embedding table gives dense AdamW's result."""

from __future__ import annotations

import pytest
import torch

from bertfit.adamw import AdamW
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


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipping every step, and never
def test_clipping_inside_the_fused_step_equals_clip_grad_norm(max_norm):
    # The trainer's _clip hands the clipping to fused AdamW's grad_scale when no loss scaler runs; scaling=True (a
    # loss scaler) takes clip_grad_norm_. Both give the same norms and the same weights, the lazy table's included.
    from bertfit.trainer import _clip

    torch.manual_seed(0)
    start = _Model().state_dict()
    runs = []
    for scaling in (True, False):
        model = _Model()
        model.load_state_dict(start)
        table = LazyEmbedding(model, weight_decay=0.01)
        optimizer = AdamW([{"params": model.head.parameters()}], lr=1e-2, weight_decay=0.01, fused=True)
        norms = []
        for ids in _batches(20, 50):
            (model(ids) * 50).backward()
            norms.append(float(_clip(optimizer, table, max_norm, scaling)))
            optimizer.step()
            table.step(1e-2)
            optimizer.zero_grad()
        table.flush()
        runs.append((model, table, norms))
    (plain, plain_table, plain_norms), (fused, fused_table, fused_norms) = runs
    assert fused_norms == pytest.approx(plain_norms, rel=1e-6)
    torch.testing.assert_close(fused.head.weight, plain.head.weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused_table.weight, plain_table.weight, rtol=1e-5, atol=1e-7)
    assert not torch.equal(fused.head.weight, start["head.weight"])


def test_the_rows_gradient_is_the_same_in_every_run():
    # A row used many times in a batch sums its gradients; the sum must not depend on thread timing, or two runs of
    # one seed train different models (the backward of rows[inverse] was such a sum on a multi-threaded CPU).
    model = _Model(vocab=3000, hidden=384)
    table = LazyEmbedding(model).train()
    ids = torch.randint(0, 300, (16, 40), generator=torch.Generator().manual_seed(0))  # many repeats
    upstream = torch.randn(16, 40, 384, generator=torch.Generator().manual_seed(1))
    grads = []
    for _ in range(20):
        table(ids).backward(upstream)
        grads.append(table.rows.grad)
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])
    expected = torch.zeros(3000, 384).index_add_(0, ids.flatten(), upstream.reshape(-1, 384))
    torch.testing.assert_close(grads[0], expected[table.ids])
