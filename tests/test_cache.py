"""The cache: a hit returns exactly what tokenizing (or embedding) returns; any change of input misses."""

from __future__ import annotations

from conftest import sentiment_rows

from bertfit import TextDataset, train
from bertfit.cache import cache_directory, tokenize_cached

TEXTS = ["the film was superb", "it was quite awful", "", "free prize call now " * 20]


def _tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_second_call_reads_the_cache_and_matches_tokenizing(tiny_model_dir, tmp_path, caplog):
    tokenizer = _tokenizer(tiny_model_dir)
    first = tokenize_cached(tokenizer, TEXTS, 16, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    with caplog.at_level("INFO", logger="bertfit"):
        second = tokenize_cached(tokenizer, TEXTS, 16, tmp_path)
    assert "from the cache" in caplog.text
    direct = dict(tokenizer(TEXTS, truncation=True, max_length=16))
    assert first == second == direct


def test_other_texts_or_max_length_make_new_entries(tiny_model_dir, tmp_path):
    tokenizer = _tokenizer(tiny_model_dir)
    tokenize_cached(tokenizer, TEXTS, 16, tmp_path)
    tokenize_cached(tokenizer, TEXTS, 32, tmp_path)
    tokenize_cached(tokenizer, TEXTS[:-1] + [TEXTS[-1] + "!"], 16, tmp_path)
    tokenize_cached(tokenizer, ["ab", "c"], 16, tmp_path)
    tokenize_cached(tokenizer, ["a", "bc"], 16, tmp_path)  # the same characters split otherwise: another entry
    assert len(list(tmp_path.glob("*.npz"))) == 5


def test_windows_are_cached_with_their_text_index(tiny_model_dir, tmp_path):
    tokenizer = _tokenizer(tiny_model_dir)
    first = tokenize_cached(tokenizer, TEXTS, 16, tmp_path, stride=4)
    second = tokenize_cached(tokenizer, TEXTS, 16, tmp_path, stride=4)
    direct = tokenizer(TEXTS, truncation=True, max_length=16, stride=4, return_overflowing_tokens=True)
    assert first == second == dict(direct)
    assert first["overflow_to_sample_mapping"][-1] == 3 and len(first["input_ids"]) > len(TEXTS)
    tokenize_cached(tokenizer, TEXTS, 16, tmp_path, stride=2)  # another stride, another entry
    tokenize_cached(tokenizer, TEXTS, 16, tmp_path)  # truncation, another entry
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_window_text_index_is_global_across_tokenizer_batches(tiny_model_dir):
    from bertfit.progress import tokenize

    tokenizer = _tokenizer(tiny_model_dir)
    kwargs = {"truncation": True, "max_length": 16, "stride": 4, "return_overflowing_tokens": True}
    assert tokenize(tokenizer, TEXTS[::-1], batch_size=1, **kwargs) == dict(tokenizer(TEXTS[::-1], **kwargs))


def test_damaged_entry_is_recomputed(tiny_model_dir, tmp_path, caplog):
    tokenizer = _tokenizer(tiny_model_dir)
    tokenize_cached(tokenizer, TEXTS, 16, tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(b"not a zip file")
    with caplog.at_level("WARNING", logger="bertfit"):
        again = tokenize_cached(tokenizer, TEXTS, 16, tmp_path)
    assert "damaged cache entry" in caplog.text
    assert again == dict(tokenizer(TEXTS, truncation=True, max_length=16))
    assert tokenize_cached(tokenizer, TEXTS, 16, tmp_path) == again  # the entry was written anew


def test_cache_directory_choice(tmp_path, monkeypatch):
    assert cache_directory("none") is None
    assert cache_directory(str(tmp_path)) == tmp_path / "tokens"
    monkeypatch.setenv("BERTFIT_CACHE", str(tmp_path / "env"))
    assert cache_directory(None) == tmp_path / "env" / "tokens"


def test_a_second_training_run_skips_tokenizing(tiny_config, tmp_path, caplog):
    rows = sentiment_rows(60)
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    config = tiny_config(epochs=1, cache_dir=str(tmp_path))
    with caplog.at_level("INFO", logger="bertfit"):
        first = train(config, data)
    assert "from the cache" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="bertfit"):
        second = train(config, data)
    # The training texts (their lengths choose max_length; none is longer than a window, so none is tokenized
    # again), then the validation windows.
    assert caplog.text.count("from the cache") == 2
    assert first.info_["history"][0]["train_loss"] == second.info_["history"][0]["train_loss"]
    assert len(list((tmp_path / "tokens").glob("*.npz"))) == 2


def test_frozen_embeddings_are_read_back_for_the_same_encoder_texts_and_cut(tiny_model_dir, tmp_path, caplog):
    from transformers import AutoModelForSequenceClassification

    from bertfit.baseline import frozen_embeddings

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    tokenizer = _tokenizer(tiny_model_dir)
    train_texts, val_texts = TEXTS[:2], TEXTS[2:]
    computed = frozen_embeddings(model, tokenizer, train_texts, val_texts, 16, 4)
    first = frozen_embeddings(model, tokenizer, train_texts, val_texts, 16, 4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2  # one entry per split
    with caplog.at_level("INFO", logger="bertfit"):
        second = frozen_embeddings(model, tokenizer, train_texts, val_texts, 16, 4, cache_dir=tmp_path)
    assert caplog.text.count("read the frozen embeddings") == 2
    for a, b, c in zip(computed[:2], first[:2], second[:2]):
        assert (a == b).all() and (b == c).all() and a.dtype == c.dtype
    frozen_embeddings(model, tokenizer, train_texts, val_texts, 8, 4, cache_dir=tmp_path)  # another cut
    assert len(list(tmp_path.glob("*.npz"))) == 4
    import torch

    with torch.no_grad():
        model.base_model.embeddings.LayerNorm.bias += 0.5  # other weights: other vectors
    changed = frozen_embeddings(model, tokenizer, train_texts, val_texts, 16, 4, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 6
    assert not (changed[0] == first[0]).all()


def test_a_training_run_with_baselines_reuses_the_frozen_embeddings(tiny_config, tmp_path, caplog):
    rows = sentiment_rows(60)
    data = TextDataset([t for t, _ in rows], [label for _, label in rows])
    config = tiny_config(epochs=1, cache_dir=str(tmp_path), baselines=True)
    first = train(config, data)
    with caplog.at_level("INFO", logger="bertfit"):
        second = train(config, data)
    assert caplog.text.count("read the frozen embeddings") == 2
    key = "frozen_embeddings_logreg"
    assert first.info_["baselines"][key]["metrics"] == second.info_["baselines"][key]["metrics"]
