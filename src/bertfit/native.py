"""Prediction without transformers: a BERT sequence classifier in plain PyTorch, and its tokenizer on the Rust
``tokenizers`` library alone (:mod:`bertfit.fast_tokenizer`), for the model directories that ``bertfit train`` writes.

Importing transformers' model and tokenizer classes costs more than torch itself (4.2 s of a 9.4 s ``bertfit
predict`` of one text on a 2-core CPU: its modeling utilities pull in torch.distributed, scipy.optimize and the
masking utilities), while a BERT's inference forward is a few lines of torch. :func:`load_native` reads a saved BERT
classifier (``config.json``, ``model.safetensors``, ``tokenizer.json``) into a :class:`BertClassifier` and a
:class:`~bertfit.fast_tokenizer.FastTokenizer`, which behave as transformers' ``BertForSequenceClassification`` (in
eval mode) and fast tokenizer do where :mod:`bertfit.features` and :mod:`bertfit.inference` use them. Anything it
does not reproduce exactly (another architecture, an option of BERT it does not implement, a weight it does not
expect) makes it return None, and the caller loads the model with transformers. Training, explanation and export
always use transformers.

The tests hold both to transformers: the same token ids, windows and padding, logits within 1e-5 in fp32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .fast_tokenizer import load_fast_tokenizer

__all__ = ["load_native", "BertClassifier", "NativeConfig"]

_ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "relu": None}
# config.json fields that change the eval-mode forward of BERT: any value but these leaves the model to transformers.
_PLAIN_BERT = {
    "position_embedding_type": (None, "absolute"),
    "is_decoder": (None, False),
    "add_cross_attention": (None, False),
    "chunk_size_feed_forward": (None, 0),
    "pruned_heads": (None, {}),
    "output_attentions": (None, False),
}
_IGNORED_WEIGHTS = ("bert.embeddings.position_ids",)  # a buffer older checkpoints saved


@dataclass(frozen=True)
class NativeConfig:
    """What :class:`BertClassifier` reads of a ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    num_labels: int

    @classmethod
    def from_json(cls, config: dict[str, Any]) -> NativeConfig | None:
        """The config of a plain BERT sequence classifier, else None."""
        if config.get("model_type") != "bert" or config.get("architectures") != ["BertForSequenceClassification"]:
            return None
        if config.get("hidden_act") not in _ACTIVATIONS:
            return None
        if any(config.get(key) not in allowed for key, allowed in _PLAIN_BERT.items()):
            return None
        try:
            return cls(
                vocab_size=int(config["vocab_size"]),
                hidden_size=int(config["hidden_size"]),
                num_hidden_layers=int(config["num_hidden_layers"]),
                num_attention_heads=int(config["num_attention_heads"]),
                intermediate_size=int(config["intermediate_size"]),
                max_position_embeddings=int(config["max_position_embeddings"]),
                type_vocab_size=int(config.get("type_vocab_size", 2)),
                layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                hidden_act=config["hidden_act"],
                num_labels=len(config["id2label"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


class _Output(NamedTuple):
    logits: Any


def _empty(*shape: int):
    # Parameters are created uninitialized: load_native assigns the saved weights (no random init to pay for).
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight, self.bias = _empty(n_out, n_in), _empty(n_out)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class _Embedding(nn.Module):
    def __init__(self, rows: int, width: int) -> None:
        super().__init__()
        self.weight = _empty(rows, width)

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class _LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = _empty(width), _empty(width), eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Embeddings(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.word_embeddings = _Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = _Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = _LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions))


class _Projection(nn.Module):  # a dense layer, then LayerNorm of it plus the residual
    def __init__(self, n_in: int, c: NativeConfig) -> None:
        super().__init__()
        self.dense = _Linear(n_in, c.hidden_size)
        self.LayerNorm = _LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = _Linear(c.hidden_size, c.hidden_size)
        self.key = _Linear(c.hidden_size, c.hidden_size)
        self.value = _Linear(c.hidden_size, c.hidden_size)

    def forward(self, x, mask):
        batch, length, width = x.shape

        def split(t):  # (batch, length, width) -> (batch, heads, length, head width)
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), mask)
        return out.transpose(1, 2).reshape(batch, length, width)


class _Attention(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Projection(c.hidden_size, c)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.dense = _Linear(c.hidden_size, c.intermediate_size)
        self.approximate = _ACTIVATIONS[c.hidden_act]

    def forward(self, x):
        x = self.dense(x)
        return F.relu(x) if self.approximate is None else F.gelu(x, approximate=self.approximate)


class _Layer(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _Projection(c.intermediate_size, c)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Encoder(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class _Pooler(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.dense = _Linear(c.hidden_size, c.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # the [CLS] token's state


class _Bert(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.pooler = _Pooler(c)


class BertClassifier(nn.Module):
    """BERT + pooler + linear head for inference, with the parameter names of transformers'
    ``BertForSequenceClassification``: ``model(input_ids, attention_mask, token_type_ids).logits`` is
    ``(batch, num_labels)``, as transformers gives in eval mode for the same weights (see :func:`load_native`)."""

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = _Bert(config)
        self.classifier = _Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> _Output:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask[:, None, None, :].bool()  # (batch, 1, 1, length): the keys a query may attend to
        x = self.bert.encoder(self.bert.embeddings(input_ids, token_type_ids), mask)
        return _Output(self.classifier(self.bert.pooler(x)))


def load_native(path: str | Path):
    """Load a BERT sequence classifier directory without transformers.

    Args:
        path: A model directory with ``config.json``, ``model.safetensors``, ``tokenizer.json`` and
            ``tokenizer_config.json``, as transformers' ``save_pretrained`` writes them.

    Returns:
        ``(model, tokenizer)``: a :class:`BertClassifier` in eval mode, fp32, on the CPU, and a
        :class:`~bertfit.fast_tokenizer.FastTokenizer`; or None where the directory is not one that this module
        reproduces exactly (see the module docstring): the caller then loads it with transformers.

    >>> load_native("no-such-directory") is None
    True
    """
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    native = NativeConfig.from_json(config) if isinstance(config, dict) else None
    weights = path / "model.safetensors"
    if native is None or not weights.is_file():
        return None
    tokenizer = load_fast_tokenizer(path)
    if tokenizer is None:
        return None
    model = _model(weights, native)
    if model is None:
        return None
    return model, tokenizer


def _model(weights: Path, config: NativeConfig):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        saved = load_file(str(weights))
    except (SafetensorError, OSError):  # damaged: transformers' loader raises the ModelError that names it
        return None
    model = BertClassifier(config)
    state = {k: v for k, v in saved.items() if k not in _IGNORED_WEIGHTS}
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    if {k: tuple(v.shape) for k, v in state.items()} != expected:
        return None
    if any(v.dtype != torch.float32 for v in state.values()):
        return None
    model.load_state_dict(state, assign=True)
    return model.eval()
