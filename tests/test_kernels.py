"""The CPU training kernels: dropout with the stock distribution, attention equal to SDPA's, a clean swap back."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import sentiment_rows
from torch import nn

from bertfit import kernels, train
from bertfit.data import TextDataset
from bertfit.kernels import Dropout, attention, cpu_training_kernels, dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_drops_each_element_with_probability_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, p)
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 4 * (p * (1 - p) / x.numel()) ** 0.5 + 1 / 65536  # within 4 standard errors
    assert torch.allclose(y[y != 0], torch.full((1,), 1 / (1 - p)))


def test_dropout_masks_are_independent_across_positions_and_calls():
    torch.manual_seed(0)
    a, b = dropout(torch.ones(100_000), 0.5), dropout(torch.ones(100_000), 0.5)
    assert not torch.equal(a, b)
    # Neighbouring elements (which share an int64 draw) are uncorrelated.
    kept = (a != 0).double()
    assert abs(torch.corrcoef(torch.stack([kept[:-1], kept[1:]]))[0, 1].item()) < 0.02


def test_dropout_follows_the_seed_and_is_the_identity_off():
    x = torch.randn(3, 5, 7)
    torch.manual_seed(1)
    first = dropout(x, 0.2)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.2), first)
    assert dropout(x, 0.2, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))


def test_dropout_backward_uses_the_forward_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    expected = torch.where(y != 0, torch.tensor(1 / 0.7, dtype=torch.float64), 0.0)
    assert torch.allclose(x.grad, expected)


def test_dropout_keeps_bf16():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    assert dropout(x, 0.1).dtype == torch.bfloat16


class _Attention(nn.Module):
    is_causal = False

    def __init__(self, training: bool) -> None:
        super().__init__()
        self.train(training)


def _qkv(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, 9, 8, generator=generator, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_attention_without_dropout_in_its_own_math_equals_sdpa(mask_kind, monkeypatch):
    q, k, v = _qkv()
    lengths = torch.tensor([9, 5, 1])
    keep = (torch.arange(9)[None, :] < lengths[:, None])[:, None, None, :]  # (batch, 1, 1, key)
    mask = {"none": None, "bool": keep, "additive": torch.zeros(keep.shape, dtype=q.dtype).masked_fill(~keep, -1e9)}
    mask = mask[mask_kind]
    # Dropout 1e-12 takes the module's own path; a mask that drops nothing makes it comparable to SDPA's.
    monkeypatch.setattr(kernels, "_drop", lambda x, p: x)
    ours, _ = attention(_Attention(True), q, k, v, mask, dropout=1e-12, scaling=8**-0.5)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, mask).transpose(1, 2)
    assert ours.shape == (3, 9, 4, 8)
    assert torch.allclose(ours, reference, atol=1e-10)


def test_attention_in_evaluation_is_transformers_sdpa(monkeypatch):
    q, k, v = _qkv()
    calls = []

    def fake(*args, **kwargs):
        calls.append(args)
        return "sdpa", None

    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward", fake)
    assert attention(_Attention(False), q, k, v, None, dropout=0.1)[0] == "sdpa"
    assert attention(_Attention(True), q, k, v, None, dropout=0.0)[0] == "sdpa"
    causal = _Attention(True)
    causal.is_causal = True
    assert attention(causal, q, k, v, None, dropout=0.1)[0] == "sdpa"
    assert len(calls) == 3


def _tiny_classifier(path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)


def test_the_swap_is_used_in_training_and_undone_after(tiny_model_dir, monkeypatch):
    import transformers

    torch.manual_seed(0)
    model = _tiny_classifier(tiny_model_dir).train()
    before = {name: type(m) for name, m in model.named_modules()}
    stock = [name for name, kind in before.items() if kind is nn.Dropout]
    assert stock and model.config._attn_implementation == "sdpa"
    # Count the calls of the registered attention (in a copy of the registry, restored after the test).
    registry = dict(transformers.AttentionInterface._global_mapping)
    monkeypatch.setattr(transformers.AttentionInterface, "_global_mapping", registry)
    calls, real = [], kernels.attention
    monkeypatch.setattr(kernels, "attention", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    with cpu_training_kernels(model, "cpu"):
        assert all(type(model.get_submodule(name)) is Dropout for name in stock)
        assert model.config._attn_implementation == kernels.ATTENTION_NAME
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=torch.tensor([0, 2])).loss
        loss.backward()
        assert torch.isfinite(loss)
        model.eval()  # the training loop evaluates inside the block
    assert len(calls) == model.config.num_hidden_layers
    assert {name: type(m) for name, m in model.named_modules()} == before
    assert model.config._attn_implementation == "sdpa"
    assert not any(m.training for m in model.modules())  # the eval switch carried back to the stock modules


def test_eval_logits_are_unchanged_inside_the_block(tiny_model_dir):
    model = _tiny_classifier(tiny_model_dir).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        outside = model(input_ids=ids, attention_mask=mask).logits
        with cpu_training_kernels(model, "cpu"):
            inside = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(inside, outside)


def test_training_without_dropout_gives_the_stock_loss_and_gradients(tiny_model_dir):
    # Hidden dropout 0 (the identity in both) and attention dropout 1e-12 (so that the kernels' own attention runs;
    # no int16 draw falls under it, and torch's draws drop nothing either).
    stock = _tiny_classifier(tiny_model_dir).train()
    ours = _tiny_classifier(tiny_model_dir).train()
    ours.load_state_dict(stock.state_dict())
    for model in (stock, ours):
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
            if hasattr(module, "query"):  # a self-attention module: its dropout is the probabilities'
                module.dropout.p = 1e-12
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask, labels = (ids != 0).long(), torch.tensor([0, 2])
    stock_loss = stock(input_ids=ids, attention_mask=mask, labels=labels).loss
    stock_loss.backward()
    with cpu_training_kernels(ours, "cpu"):
        our_loss = ours(input_ids=ids, attention_mask=mask, labels=labels).loss
        our_loss.backward()
    assert torch.allclose(our_loss, stock_loss, atol=1e-6)
    for (name, a), (_, b) in zip(stock.named_parameters(), ours.named_parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_other_devices_are_left_alone(tiny_model_dir):
    model = _tiny_classifier(tiny_model_dir)
    with cpu_training_kernels(model, "cuda"):
        assert not any(type(m) is Dropout for m in model.modules())
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.slow
def test_torch_compile_trains_through_the_swapped_kernels(tiny_config):
    # --torch-compile traces the model with the kernels swapped in (about 20 s of compiling: marked slow).
    rows = sentiment_rows(40)
    clf = train(tiny_config(epochs=1, torch_compile=True), TextDataset([t for t, _ in rows], [lab for _, lab in rows]))
    assert all(math.isfinite(row["train_loss"]) for row in clf.info_["history"])
    assert not any(type(m) is Dropout for m in clf.model_.modules())
    assert clf.model_.config._attn_implementation == "sdpa"
