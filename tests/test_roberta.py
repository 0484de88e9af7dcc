"""A RoBERTa-type model: positions start after the padding index, so its limit is max_position_embeddings - 2."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import TINY_TRAINING, WORDS, sentiment_rows

from bertfit import ModelError, TextClassifier, TextDataset, TrainConfig, train
from bertfit.backbone import model_max_length


@pytest.fixture(scope="module")
def tiny_roberta_dir(tmp_path_factory):
    """A 2-layer random RoBERTa (66 position rows: 64 usable) whose byte-level BPE tokenizer sets no limit."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids: <pad> is 1
    bpe.train_from_iterator([" ".join(WORDS)] * 5, vocab_size=400, special_tokens=specials, show_progress=False)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = RobertaTokenizerFast(vocab=model["vocab"], merges=[tuple(pair) for pair in model["merges"]])
    assert tokenizer.model_max_length > 1_000_000 and tokenizer.pad_token_id == 1  # no limit: the config's counts
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=66,
    )
    path = tmp_path_factory.mktemp("tiny-roberta")
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _long_data() -> TextDataset:
    # 12 of 120 texts run past the 64-token limit, so the data-derived max_length is the limit itself.
    rows = sentiment_rows()
    texts = [text + " and the plot is very" * 20 if i % 10 == 0 else text for i, (text, _) in enumerate(rows)]
    return TextDataset(texts, [label for _, label in rows])


@pytest.mark.parametrize("long_text", ["chunk", "truncate"])
def test_roberta_trains_and_predicts_texts_past_its_limit(tiny_roberta_dir, tmp_path, long_text):
    from transformers import AutoConfig, AutoTokenizer

    assert (
        model_max_length(AutoTokenizer.from_pretrained(tiny_roberta_dir), AutoConfig.from_pretrained(tiny_roberta_dir))
        == 64
    )
    out = tmp_path / "model"
    config = TrainConfig(
        model_name_or_path=str(tiny_roberta_dir), output_dir=str(out), long_text=long_text, **TINY_TRAINING
    )
    clf = train(config, _long_data())
    assert clf.max_length == 64
    texts = ["the film was superb " * 40, "the plot is really awful " * 40, "good"]  # 200+ tokens, and one short
    probs = TextClassifier.from_pretrained(out).predict_proba(texts)
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1.0)


def test_roberta_limits_of_other_pad_ids_and_tokenizer_limits():
    roberta = SimpleNamespace(model_type="xlm-roberta", max_position_embeddings=514, pad_token_id=1)
    assert model_max_length(SimpleNamespace(model_max_length=int(1e30)), roberta) == 512
    assert model_max_length(SimpleNamespace(model_max_length=256), roberta) == 256
    bert = SimpleNamespace(model_type="bert", max_position_embeddings=512, pad_token_id=0)
    assert model_max_length(None, bert) == 512
    assert model_max_length(SimpleNamespace(model_max_length=128), SimpleNamespace(model_type="x")) == 128


def test_a_model_without_readable_limits_is_a_model_error():
    unknown = SimpleNamespace(model_type="mystery", name_or_path="org/mystery")
    with pytest.raises(ModelError, match=r"cannot tell the longest input of model 'org/mystery'.*--max-length N"):
        model_max_length(SimpleNamespace(model_max_length=int(1e30)), unknown)
    broken = SimpleNamespace(model_type="roberta", max_position_embeddings=1, pad_token_id=1, name_or_path="m")
    with pytest.raises(ModelError, match="max_position_embeddings"):
        model_max_length(None, broken)
