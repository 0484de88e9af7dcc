"""Training and prediction without transformers: a BERT sequence classifier in plain PyTorch, and its tokenizer on the
Rust ``tokenizers`` library alone (:mod:`bertfit.fast_tokenizer`), for plain BERT encoders and the model directories
that ``bertfit train`` writes.

Importing transformers' model and tokenizer classes costs more than torch itself (4.2 s of a 9.4 s ``bertfit
predict`` of one text on a 2-core CPU: its modeling utilities pull in torch.distributed, scipy.optimize and the
masking utilities), while a BERT's inference forward is a few lines of torch. :func:`load_native` reads a saved BERT
classifier (``config.json``, ``model.safetensors``, ``tokenizer.json``) into a :class:`BertClassifier` and a
:class:`~bertfit.fast_tokenizer.FastTokenizer`, which behave as transformers' ``BertForSequenceClassification`` (in
eval mode) and fast tokenizer do where :mod:`bertfit.features` and :mod:`bertfit.inference` use them. Anything it
does not reproduce exactly (another architecture, an option of BERT it does not implement, a weight it does not
expect) makes it return None, and the caller loads the model with transformers.

:func:`load_trainable` does the same for training: a plain BERT checkpoint (an encoder such as the embedded MiniLM,
a pre-training model such as bert-base-uncased, or a BERT classifier) becomes a :class:`BertClassifier` with dropout
in training mode, the loss of transformers' ``BertForSequenceClassification`` and its head initialized as
transformers initializes it, so that ``bertfit train`` imports no transformers (3.7 s of imports on a 2-core AVX2 CPU;
the set-up of a 2,000-sentence run fell from 3.5 s to 0.3 s). :meth:`BertClassifier.save_pretrained` writes the
directory transformers writes (``config.json``, ``model.safetensors``; the tokenizer's files from
:class:`~bertfit.fast_tokenizer.FastTokenizer`), which loads in plain transformers. Explanation and export load
transformers' model (:class:`bertfit.TextClassifier` converts).

The tests hold both to transformers: the same token ids, windows and padding, logits within 1e-5 in fp32, and in
training mode without dropout the same loss and gradients.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .fast_tokenizer import load_fast_tokenizer

__all__ = ["load_native", "load_trainable", "BertClassifier", "NativeConfig"]

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
# Checkpoints of BERT's pre-training heads (BertForMaskedLM, BertForPreTraining) carry weights a classifier drops.
_PRETRAINING_HEADS = ("cls.",)
# LayerNorm weights of checkpoints converted from the original TensorFlow BERT (bert-base-uncased among them), which
# transformers renames on loading as well.
_LEGACY_NORM = re.compile(r"(?<=LayerNorm)\.(gamma|beta)$")
_MULTI_LABEL = "multi_label_classification"  # transformers' problem_type for sigmoid + binary cross-entropy


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
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    problem_type: str | None = None
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # config.json as read
    model_type = "bert"  # what bertfit.backbone.model_max_length asks of a config

    @classmethod
    def from_json(cls, config: dict[str, Any], *, classifier: bool = True) -> NativeConfig | None:
        """The config of a plain BERT sequence classifier, else None; with ``classifier`` False, of any plain BERT
        checkpoint (an encoder, a pre-training model), to which a caller gives labels (``id2label``)."""
        architectures = config.get("architectures")
        if config.get("model_type") != "bert":
            return None
        if classifier and architectures != ["BertForSequenceClassification"]:
            return None
        if not classifier and not (architectures is None or all(str(a).startswith("Bert") for a in architectures)):
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
                num_labels=len(config["id2label"]) if classifier else 2,  # a caller gives a checkpoint its labels
                hidden_dropout_prob=float(config.get("hidden_dropout_prob", 0.1)),
                attention_probs_dropout_prob=float(config.get("attention_probs_dropout_prob", 0.1)),
                classifier_dropout=_optional_float(config.get("classifier_dropout")),
                initializer_range=float(config.get("initializer_range", 0.02)),
                pad_token_id=config.get("pad_token_id", 0),
                problem_type=config.get("problem_type"),
                source=config,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def to_json(self) -> dict[str, Any]:
        """``config.json`` as transformers' ``save_pretrained`` writes it for this classifier: the checkpoint's
        config with the classifier's architecture, labels and problem type."""
        import importlib.metadata

        labels = self.source.get("id2label") or {}
        config = {k: v for k, v in self.source.items() if k not in ("_name_or_path", "torch_dtype")}
        config |= {
            "architectures": ["BertForSequenceClassification"],
            "id2label": {str(i): labels.get(str(i), f"LABEL_{i}") for i in range(self.num_labels)},
            "problem_type": self.problem_type or "single_label_classification",
            "dtype": "float32",
            "transformers_version": importlib.metadata.version("transformers"),
        }
        config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
        return dict(sorted(config.items()))


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


class _Output(NamedTuple):
    logits: Any
    loss: Any = None


class _Hidden(NamedTuple):
    last_hidden_state: Any


def _empty(*shape: int):
    # Parameters are created uninitialized: load_native assigns the saved weights (no random init to pay for).
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class _Linear(nn.Linear):  # an nn.Linear (bertfit.trainer.init_prior_bias looks for one) without its random init
    def __init__(self, n_in: int, n_out: int) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = n_in, n_out
        self.weight, self.bias = _empty(n_out, n_in), _empty(n_out)


def _embedding(rows: int, width: int, padding_idx: int | None = None) -> nn.Embedding:
    # An nn.Embedding (the lazy AdamW update of bertfit.lazy_adam replaces one) without its random init. As in
    # transformers' BERT, the padding row of the token table gets no gradient.
    return nn.Embedding(rows, width, padding_idx=padding_idx, _weight=torch.empty(rows, width), _freeze=True)


class _LayerNorm(nn.Module):
    def __init__(self, width: int, eps: float) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = _empty(width), _empty(width), eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class _Embeddings(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        pad = c.pad_token_id if isinstance(c.pad_token_id, int) and 0 <= c.pad_token_id < c.vocab_size else None
        self.word_embeddings = _embedding(c.vocab_size, c.hidden_size, pad)
        self.position_embeddings = _embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = _embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = _LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x + self.position_embeddings(positions)))


class _Projection(nn.Module):  # a dense layer and dropout, then LayerNorm of it plus the residual
    def __init__(self, n_in: int, c: NativeConfig) -> None:
        super().__init__()
        self.dense = _Linear(n_in, c.hidden_size)
        self.LayerNorm = _LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = _Linear(c.hidden_size, c.hidden_size)
        self.key = _Linear(c.hidden_size, c.hidden_size)
        self.value = _Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)  # of the attention probabilities, in training

    def forward(self, x, mask):
        batch, length, width = x.shape

        def split(t):  # (batch, length, width) -> (batch, heads, length, head width)
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        query, key, value = split(self.query(x)), split(self.key(x)), split(self.value(x))
        p = self.dropout.p if self.training else 0.0
        if p > 0.0 and type(self.dropout) is not nn.Dropout:  # another dropout swapped in (bertfit.kernels)
            scores = torch.matmul(query, key.transpose(-1, -2)) * query.shape[-1] ** -0.5  # (batch, heads, q, k)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            out = torch.matmul(self.dropout(torch.softmax(scores, dim=-1)), value)
        else:  # SDPA, with its own fused dropout in training
            out = F.scaled_dot_product_attention(query, key, value, mask, dropout_p=p)
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


class _Bert(nn.Module):  # the encoder: ``model.base_model``, whose output has ``last_hidden_state``
    def __init__(self, c: NativeConfig) -> None:
        super().__init__()
        self.config = c
        self.embeddings = _Embeddings(c)
        self.encoder = _Encoder(c)
        self.pooler = _Pooler(c)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> _Hidden:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_mask[:, None, None, :].bool()  # (batch, 1, 1, length): the keys a query may attend to
        return _Hidden(self.encoder(self.embeddings(input_ids, token_type_ids), mask))


class BertClassifier(nn.Module):
    """BERT + pooler + linear head, with the parameter names of transformers' ``BertForSequenceClassification``:
    ``model(input_ids, attention_mask, token_type_ids).logits`` is ``(batch, num_labels)``, as transformers gives for
    the same weights, and with ``labels`` the output's ``loss`` is transformers' (cross-entropy, or binary
    cross-entropy for the multi-label problem type). In training mode the same dropouts as transformers' apply."""

    base_model_prefix = "bert"

    def __init__(self, config: NativeConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = _Bert(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = _Linear(config.hidden_size, config.num_labels)

    @property
    def base_model(self) -> nn.Module:
        return self.bert

    def get_input_embeddings(self) -> nn.Module:
        return self.bert.embeddings.word_embeddings

    def set_input_embeddings(self, module: nn.Module) -> None:
        self.bert.embeddings.word_embeddings = module

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> _Output:
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        logits = self.classifier(self.dropout(self.bert.pooler(hidden)))  # (batch, num_labels)
        if labels is None:
            return _Output(logits)
        if self.config.problem_type == _MULTI_LABEL:
            return _Output(logits, F.binary_cross_entropy_with_logits(logits.float(), labels.float()))
        return _Output(logits, F.cross_entropy(logits.float(), labels))

    def save_pretrained(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` as transformers' ``save_pretrained`` does (fp32)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.config.to_json(), indent=2) + "\n", encoding="utf-8")
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})


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
    config = _read_config(path)
    native = None if config is None else NativeConfig.from_json(config)
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


def load_trainable(path: str | Path, labels: list[str], multi_label: bool = False):
    """Load a plain BERT checkpoint for training a classifier of ``labels``, without transformers.

    Args:
        path: A model directory with ``config.json`` (a BERT of the options :class:`BertClassifier` implements),
            fp32 ``model.safetensors`` and a BERT ``tokenizer.json`` (see :func:`load_native`); the weights may be
            an encoder's (``BertModel``), a pre-training model's (its ``cls.`` heads are dropped) or a classifier's.
        labels: The label names, in id order.
        multi_label: Train with binary cross-entropy (transformers' ``multi_label_classification``).

    Returns:
        ``(model, tokenizer)``: a :class:`BertClassifier` in eval mode whose parameters all train, and a
        :class:`~bertfit.fast_tokenizer.FastTokenizer`; or None where transformers must load it. Weights the
        checkpoint lacks (the head; the pooler of some encoders) or that have another shape (a head of other labels)
        are initialized as transformers initializes them, from torch's random generator: normal(0,
        ``initializer_range``) weights and zero biases.

    >>> load_trainable("no-such-directory", ["neg", "pos"]) is None
    True
    """
    path = Path(path)
    config = _read_config(path)
    native = None if config is None else NativeConfig.from_json(config, classifier=False)
    weights = path / "model.safetensors"
    if native is None or not weights.is_file():
        return None
    tokenizer = load_fast_tokenizer(path)
    saved = _load_weights(weights)
    if tokenizer is None or saved is None:
        return None
    source = {**config, "id2label": {str(i): label for i, label in enumerate(labels)}}
    source["problem_type"] = _MULTI_LABEL if multi_label else None
    native = replace(native, num_labels=len(labels), problem_type=source["problem_type"], source=source)
    model = BertClassifier(native)
    state = _checkpoint_state(saved, model, native.initializer_range)
    if state is None:
        return None
    model.load_state_dict(state, assign=True)
    return model.requires_grad_(True).eval(), tokenizer


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _load_weights(weights: Path) -> dict[str, torch.Tensor] | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(weights))
    except (SafetensorError, OSError):  # damaged: transformers' loader raises the ModelError that names it
        return None


def _checkpoint_state(saved: dict[str, torch.Tensor], model: BertClassifier, std: float):
    # The checkpoint's weights under the classifier's names, the missing head and pooler initialized; None when a
    # weight is unknown, not fp32, or missing elsewhere (transformers then loads it, and says what is wrong).
    state = {}
    for name, tensor in saved.items():
        if name in _IGNORED_WEIGHTS or name.endswith("position_ids") or name.startswith(_PRETRAINING_HEADS):
            continue
        name = _LEGACY_NORM.sub(lambda m: ".weight" if m.group(1) == "gamma" else ".bias", name)
        state[name if name.startswith(("bert.", "classifier.")) else f"bert.{name}"] = tensor
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    if set(state) - set(expected) or any(t.dtype != torch.float32 for t in state.values()):
        return None
    fresh = [name for name, shape in expected.items() if name not in state or tuple(state[name].shape) != shape]
    if any(not name.startswith(("classifier.", "bert.pooler.")) for name in fresh):
        return None
    for name in fresh:  # as transformers' _init_weights: normal(0, initializer_range) weights, zero biases
        tensor = torch.zeros(expected[name])
        state[name] = tensor.normal_(0.0, std) if name.endswith(".weight") else tensor
    return state


def _model(weights: Path, config: NativeConfig):
    saved = _load_weights(weights)
    if saved is None:
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
