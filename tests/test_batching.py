"""Token-budget batches: every text once per epoch, within the budget, a fixed count, a new order each epoch."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sentiment_rows

from bertfit import ConfigError, TextDataset, TrainConfig, train
from bertfit.batching import TokenBudgetBatchSampler, budget_batch_sizes


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


def test_every_text_once_per_epoch_within_the_budget():
    lengths = np.random.default_rng(0).integers(3, 60, size=500)
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=256, seed=1)
    for epoch in range(3):
        batches = _epoch(sampler, epoch)
        assert sorted(i for batch in batches for i in batch) == list(range(500))
        assert all(len(batch) * max(lengths[batch]) <= 256 for batch in batches)
        assert len(batches) == len(sampler)  # the same count every epoch: the schedule relies on it
    padded = sum(len(b) * max(lengths[b]) for b in _epoch(sampler, 0))
    assert 1 - lengths.sum() / padded < 0.05  # texts of nearly equal length share a batch


def test_order_changes_between_epochs_and_repeats_with_the_seed():
    lengths = [4, 4, 4, 4, 9, 9, 9, 9, 20, 20] * 10
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=40, seed=3)
    assert _epoch(sampler, 0) != _epoch(sampler, 1)
    assert _epoch(sampler, 1) == _epoch(TokenBudgetBatchSampler(lengths, max_tokens=40, seed=3), 1)


def test_short_texts_fill_bigger_batches():
    lengths = [5] * 40 + [50] * 4
    batches = list(TokenBudgetBatchSampler(lengths, max_tokens=100, shuffle=False))
    assert [len(b) for b in batches] == [20, 20, 2, 2]
    assert budget_batch_sizes(sorted(lengths), 100) == [20, 20, 2, 2]


def test_budget_below_the_longest_text_is_refused():
    with pytest.raises(ConfigError, match="cannot hold the longest training text \\(50 tokens\\)"):
        TokenBudgetBatchSampler([5, 50], max_tokens=40)
    with pytest.raises(ConfigError, match="max_tokens_per_batch must be an integer >= 8"):
        TrainConfig(max_tokens_per_batch=2)


def test_training_with_a_token_budget_takes_one_step_per_budget_batch(tiny_config):
    rows, val_rows = sentiment_rows(120), sentiment_rows(20, seed=1)
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    validation = TextDataset([t for t, _ in val_rows], [label for _, label in val_rows])
    clf = train(tiny_config(epochs=2, max_tokens_per_batch=64), data, validation)
    lengths = [len(ids) for ids in clf.tokenizer_(data.texts)["input_ids"]]
    assert clf.info_["schedule"]["optimizer_steps"] == 2 * len(budget_batch_sizes(sorted(lengths), 64))
    assert clf.info_["padding_share"] < 0.1


def test_length_grouped_batches_never_truncate_a_window(tiny_model_dir):
    from bertfit.backbone import load_tokenizer
    from bertfit.batching import length_grouped_batches
    from bertfit.features import Windowing, encode
    from bertfit.trainer import Windows

    tokenizer = load_tokenizer(tiny_model_dir)
    rng = np.random.default_rng(0)
    words = ["good", "bad", "film", "plot", "the", "was", "very"]
    texts = [" ".join(rng.choice(words, size=int(n))) for n in rng.integers(1, 60, size=97)]
    encoded = encode(tokenizer, texts, Windowing(64))
    windows = Windows(encoded, np.zeros(len(encoded), dtype=np.int64), pad_id=tokenizer.pad_token_id)
    seen = []
    for indices in length_grouped_batches(windows.lengths, 8, seed=3):
        batch = windows.batch(indices, "cpu")
        for row, mask, i in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist(), indices):
            ids = list(encoded.columns["input_ids"][i])
            assert row[: len(ids)] == ids and sum(mask) == len(ids)  # every token of the window, in order
            assert set(row[len(ids) :]) <= {tokenizer.pad_token_id}  # then padding only
            seen.append(int(i))
    assert sorted(seen) == list(range(len(encoded)))  # every window once per epoch


@pytest.mark.slow
def test_compiled_model_logits_equal_eager_within_bf16_tolerance(tiny_model_dir):
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    compiled = torch.compile(model, dynamic=True)  # as trainer.py compiles it with --torch-compile
    for length in (7, 19, 33):  # several padded shapes through the one dynamic graph
        ids = torch.randint(5, model.config.vocab_size, (4, length))
        mask = torch.ones_like(ids)
        mask[0, length // 2 :] = 0
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            eager = model(input_ids=ids, attention_mask=mask).logits.float()
            fast = compiled(input_ids=ids, attention_mask=mask).logits.float()
        assert torch.allclose(fast, eager, atol=2e-2, rtol=2e-2), (fast - eager).abs().max()
