from __future__ import annotations

import math
import random

import numpy as np
import pytest
from conftest import WORDS

from bertfit import ConfigError
from bertfit.chunking import Windowing, aggregate_logits, cap_windows, encode_windows

WINDOW, STRIDE = 16, 4


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _content(ids: list[int], tokenizer) -> list[int]:
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id  # every window is a full input
    return ids[1:-1]


@pytest.mark.parametrize(("max_length", "stride"), [(16, 4), (16, 0), (24, 11), (32, 8)])
def test_windows_cover_every_token_with_the_stride(tokenizer, max_length, stride):
    rng = random.Random(max_length + stride)
    long_text = " ".join(rng.choice(WORDS) for _ in range(150))
    short_text = "the film was superb"
    windowing = Windowing(max_length, "chunk", stride)
    encoded, text_index = encode_windows(tokenizer, [short_text, long_text], windowing)

    windows = [_content(ids, tokenizer) for ids, text in zip(encoded["input_ids"], text_index) if text == 1]
    tokens = tokenizer(long_text, add_special_tokens=False)["input_ids"]
    size, step = max_length - 2, max_length - 2 - stride
    assert text_index.tolist() == [0] + [1] * len(windows)  # the short text: one window
    assert encoded["input_ids"][0] == tokenizer(short_text)["input_ids"]
    assert len(windows) == 1 + math.ceil((len(tokens) - size) / step)
    assert all(len(window) == size for window in windows[:-1])
    for before, after in zip(windows, windows[1:]):  # consecutive windows share exactly `stride` tokens
        assert before[len(before) - stride :] == after[:stride]
    assert windows[0] + [t for window in windows[1:] for t in window[stride:]] == tokens  # every token, in order


def test_no_window_is_only_overlap(tokenizer):
    # A text that ends exactly at a window boundary gets no extra window repeating the overlap.
    size, step = WINDOW - 2, WINDOW - 2 - STRIDE
    for n_tokens in range(1, 60):
        _, text_index = encode_windows(tokenizer, ["good " * n_tokens], Windowing(WINDOW, "chunk", STRIDE))
        assert len(text_index) == 1 + max(0, math.ceil((n_tokens - size) / step))


def test_cap_windows_keeps_the_first_the_last_and_evenly_spaced_ones():
    text_index = np.repeat([0, 1, 2], [1, 3, 10])
    kept = cap_windows(text_index, 3)
    assert kept.tolist() == [0, 1, 2, 3, 4, 8, 13]  # text 2 (windows 4..13): first, middle, last
    assert cap_windows(text_index, 1).tolist() == [0, 1, 4]
    assert cap_windows(np.zeros(0, dtype=np.int64), 3).tolist() == []


def test_training_windows_are_capped(tokenizer):
    texts = ["good " * 200, "bad"]
    encoded, text_index = encode_windows(tokenizer, texts, Windowing(WINDOW, "chunk", STRIDE), max_windows=5)
    assert np.bincount(text_index).tolist() == [5, 1] and len(encoded["input_ids"]) == 6


def test_aggregation_is_order_independent():
    rng = np.random.default_rng(0)
    text_index = np.repeat(np.arange(6), [1, 4, 2, 7, 1, 3])
    logits = (3 * rng.standard_normal((len(text_index), 5))).astype(np.float32)
    for rule in ("mean", "max"):
        expected = aggregate_logits(logits, text_index, 6, rule)
        for _ in range(5):
            perm = rng.permutation(len(text_index))
            np.testing.assert_array_equal(aggregate_logits(logits[perm], text_index[perm], 6, rule), expected)


def test_mean_and_max_rules():
    logits = np.array([[1.0, 0.0], [3.0, -4.0], [2.0, 2.0], [-1.0, 5.0]], dtype=np.float32)
    text_index = np.array([0, 0, 1, 0])
    np.testing.assert_allclose(aggregate_logits(logits, text_index, 2, "mean"), [[1.0, 1 / 3], [2.0, 2.0]])
    np.testing.assert_array_equal(aggregate_logits(logits, text_index, 2, "max"), [[3.0, 5.0], [2.0, 2.0]])
    # One window per text, in any order: the rows themselves, put in text order.
    np.testing.assert_array_equal(aggregate_logits(logits[:3], np.array([2, 0, 1]), 3), logits[[1, 2, 0]])
    with pytest.raises(ConfigError, match="aggregate must be one of mean, max"):
        aggregate_logits(logits, text_index, 2, "median")
