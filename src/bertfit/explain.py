"""Why a model gave a text its label: per-word attributions by layer integrated gradients (Captum), rendered as
plain text, JSON or highlighted HTML.

:func:`explain` integrates the gradient of one label's probability along the straight path from a baseline to the
text in the space of the input (word-piece) embeddings: ``model.get_input_embeddings()``, so position and segment
embeddings are the same at both ends. The baseline keeps ``[CLS]``, ``[SEP]`` and the length, and puts ``[PAD]`` in
place of every other token. A token's score is its attribution summed over the hidden dimension; a word's score is
the sum over its word pieces (the fast tokenizer's ``word_ids``), with the word's character span in the text from the
offsets. Scores are in units of probability: by the completeness of integrated gradients they add up to
``probability - baseline_probability``, up to ``convergence_delta`` (the error of the ``steps``-point integral).

What is explained is the probability the model reports (:meth:`~bertfit.predictor.Predictor.predict_proba` in fp32):
logits divided by the saved temperature, then a softmax, or a sigmoid per label for a multi-label model (one label
at a time: by default the most probable one). With ``long_text`` chunk a long text's windows are explained together:
the function integrated is the text's probability from its aggregated (mean or max) window logits, exactly as
predicted, so every word of the text gets a score and the completeness above holds for the whole text; a token in
the overlap of two windows sums its attributions from both. With ``truncate`` the words past ``max_length`` tokens
were not seen by the model and get none (:attr:`Explanation.truncated` says so). A model with a lexical head
(:mod:`bertfit.lexical`) reports the average of this probability with its TF-IDF head's: what is explained is the
encoder's part, and ``probability`` is the encoder's.

Gradients need the PyTorch model: an ONNX export cannot be explained (:class:`~bertfit.exceptions.ModelError`).
Captum hooks the embedding layer while :func:`explain` runs, so a prediction with the same model in another thread
at that time would see the hooked layer; the server serializes the two.
"""

from __future__ import annotations

import html
import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .exceptions import ConfigError, MissingDependencyError, ModelError
from .model import TextClassifier
from .predictor import Predictor

__all__ = [
    "WordAttribution",
    "Explanation",
    "explain",
    "explanation_unavailable",
    "format_explanation",
    "explanation_html",
    "MAX_STEPS",
]

logger = logging.getLogger(__name__)

MAX_STEPS = 1024  # more integration points than this buy no accuracy and cost minutes
_POSITIVE_RGB = (26, 158, 85)  # green: the word raises the label's probability
_NEGATIVE_RGB = (208, 2, 27)  # red: it lowers it
_ANSI_POSITIVE = (194, 157, 120, 83, 46)  # xterm-256 backgrounds, faint to strong
_ANSI_NEGATIVE = (224, 217, 210, 203, 196)


@dataclass(frozen=True)
class WordAttribution:
    """One word of the text and its score.

    Attributes:
        word: ``text[start:end]``.
        start: Character offset of the word's first character.
        end: Character offset just past its last character.
        score: Change of the label's probability this word accounts for (positive: towards the label).
    """

    word: str
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class Explanation:
    """The attributions of one text for one label (see :mod:`bertfit.explain`).

    Attributes:
        text: The text explained (offsets index into it).
        label: The label explained.
        predicted: Whether the model predicts that label for the text.
        probability: The label's probability for the text.
        baseline_probability: Its probability for the baseline (special tokens and padding only).
        convergence_delta: ``sum(scores) - (probability - baseline_probability)``: the integral's error.
        steps: Integration points.
        windows: Model inputs the text was split into (1 unless ``long_text`` is chunk).
        truncated: The model saw only the first ``max_length`` tokens; later words have no score.
        words: The words in text order.
    """

    text: str
    label: str
    predicted: bool
    probability: float
    baseline_probability: float
    convergence_delta: float
    steps: int
    windows: int
    truncated: bool
    words: tuple[WordAttribution, ...]

    def weights(self) -> list[float]:
        """Each word's score divided by the largest absolute score, in ``[-1, 1]`` (all 0 when every score is)."""
        scale = max((abs(w.score) for w in self.words), default=0.0)
        return [w.score / scale if scale > 0 else 0.0 for w in self.words]

    def top(self, k: int = 10) -> list[WordAttribution]:
        """The ``k`` words with the largest absolute scores, largest first."""
        return sorted(self.words, key=lambda w: -abs(w.score))[:k]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping: the fields above, and per word ``word``, ``start``, ``end``, ``score``, ``weight``."""
        words = [
            {"word": w.word, "start": w.start, "end": w.end, "score": w.score, "weight": weight}
            for w, weight in zip(self.words, self.weights())
        ]
        fields = ("text", "label", "predicted", "probability", "baseline_probability", "convergence_delta")
        return {
            **{name: getattr(self, name) for name in fields},
            "steps": self.steps,
            "windows": self.windows,
            "truncated": self.truncated,
            "words": words,
        }


def explanation_unavailable(classifier: Predictor) -> str | None:
    """Why :func:`explain` cannot run for ``classifier`` (captum missing, or not a PyTorch model), else None."""
    if not isinstance(classifier, TextClassifier):
        return (
            f"a {type(classifier).__name__} (an ONNX export) cannot be explained: integrated gradients need the "
            "PyTorch model; explain the model directory it was exported from"
        )
    if importlib.util.find_spec("captum") is None:
        return str(MissingDependencyError.for_extra("explanations", "explain", "captum"))
    return None


def explain(
    classifier: Predictor, text: str, label: str | None = None, *, steps: int = 32, batch_size: int = 64
) -> Explanation:
    """Per-word attributions of ``text`` for ``label`` by layer integrated gradients.

    Args:
        classifier: A PyTorch :class:`~bertfit.model.TextClassifier` (``load_classifier(DIR)`` of a model directory).
        text: The text.
        label: The label to explain; default: the predicted one (multi-label: the most probable label).
        steps: Integration points (Gauss-Legendre); more: a smaller ``convergence_delta``, proportionally slower.
        batch_size: Most rows (windows x integration points) per forward and backward pass; bounds the memory.

    Returns:
        The :class:`Explanation`.

    Raises:
        ModelError: ``classifier`` is an ONNX export.
        MissingDependencyError: captum is not installed (``pip install 'bertfit[explain]'``).
        ConfigError: ``label`` is not one of the model's labels, or ``steps`` is out of range.

    >>> explain(load_classifier("runs/spam"), "free prize, call now").top(1)  # doctest: +SKIP
    [WordAttribution(word='prize', start=5, end=10, score=0.41)]
    """
    if not isinstance(classifier, TextClassifier):
        raise ModelError(explanation_unavailable(classifier))
    classifier._check_fitted()
    try:
        from captum.attr import LayerIntegratedGradients
    except ImportError:
        raise MissingDependencyError.for_extra("explanations", "explain", "captum") from None
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ConfigError(f"steps must be an integer from 1 to {MAX_STEPS}, got {steps!r}")
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    inputs = _Inputs.of(classifier, text)
    probs = inputs.probabilities(inputs.ids)  # (n_labels,)
    target = _target(classifier, probs, label)
    lig = LayerIntegratedGradients(inputs.forward, classifier.model_.get_input_embeddings())
    attributions, delta = lig.attribute(
        inputs.ids,
        baselines=inputs.baseline_ids,
        target=target,
        additional_forward_args=inputs.extra,
        n_steps=steps,
        internal_batch_size=max(batch_size, len(inputs.ids)),
        return_convergence_delta=True,
    )
    scores = attributions.sum(-1).detach().double().cpu().numpy()  # (n_windows, seq): summed over the hidden dim
    baseline = inputs.probabilities(inputs.baseline_ids)[target]
    _warn_if_coarse(float(delta.sum()), float(probs[target] - baseline), steps)
    return Explanation(
        text=text,
        label=classifier.labels[target],
        predicted=bool(_predicted(classifier, probs)[target]),
        probability=float(probs[target]),
        baseline_probability=float(baseline),
        convergence_delta=float(delta.sum()),  # one delta per window row; together the whole text's
        steps=steps,
        windows=len(inputs.ids),
        truncated=inputs.truncated,
        words=_words(text, scores, inputs.word_ids, inputs.offsets),
    )


class _Inputs:
    """A text's model inputs as :func:`bertfit.features.encode` makes them (its windows), their baseline, and the
    forward function Captum integrates: the text's probability of each label, rows grouped by integration step."""

    def __init__(self, classifier: TextClassifier, encoded, truncated: bool) -> None:
        import torch

        self.classifier = classifier
        self.truncated = truncated
        self.word_ids = [encoded.word_ids(i) for i in range(len(encoded["input_ids"]))]
        self.offsets = encoded["offset_mapping"]
        columns = {k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        device = classifier.precision_.device
        batch = {k: v.to(device) for k, v in classifier.tokenizer_.pad(columns, return_tensors="pt").items()}
        self.ids = batch["input_ids"]  # (n_windows, seq)
        self.extra = tuple(batch[k] for k in ("attention_mask", "token_type_ids") if k in batch)  # (n_windows, seq)
        special = torch.zeros_like(self.ids, dtype=torch.bool)
        for i, words in enumerate(self.word_ids):  # special tokens and padding have no word
            special[i, : len(words)] = torch.tensor([w is None for w in words], dtype=torch.bool)
        special |= batch["attention_mask"] == 0
        self.baseline_ids = torch.where(special, self.ids, _pad_id(classifier.tokenizer_))

    @classmethod
    def of(cls, classifier: TextClassifier, text: str) -> _Inputs:
        windowing = classifier.windowing
        options: dict[str, Any] = {"truncation": True, "max_length": windowing.max_length}
        if windowing.mode == "chunk":  # the windows of features.encode, with their offsets
            options.update(stride=windowing.stride, return_overflowing_tokens=True)
        tokenizer = classifier.tokenizer_
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(
                f"explanations need a fast (Rust) tokenizer for word offsets, and {type(tokenizer).__name__} is not "
                "one; use a model that ships a tokenizer.json"
            )
        encoded = tokenizer([text], return_offsets_mapping=True, **options)
        truncated = windowing.mode != "chunk" and (
            len(tokenizer(text, verbose=False)["input_ids"]) > windowing.max_length  # no warning about the limit
        )
        return cls(classifier, encoded, truncated)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        """Label probabilities ``(rows, n_labels)`` for ``rows = k * n_windows`` inputs, step-major as Captum lays
        out its integration points: each step's windows give one text's probabilities, shared out over its rows
        (divided by ``n_windows``, so that a step's rows sum to the text's probability)."""
        import torch

        model, decision = self.classifier.model_, self.classifier.decision
        args = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            args["token_type_ids"] = token_type_ids
        n = len(self.ids)
        logits = model(**args).logits.float().reshape(-1, n, model.config.num_labels)  # (k, n_windows, n_labels)
        aggregate = self.classifier.windowing.aggregate
        text_logits = logits.amax(1) if aggregate == "max" else logits.mean(1)  # (k, n_labels)
        scaled = text_logits / decision.temperature
        probs = torch.sigmoid(scaled) if decision.multi_label else torch.softmax(scaled, dim=-1)
        return probs.repeat_interleave(n, dim=0) / n  # (k * n_windows, n_labels)

    def probabilities(self, ids) -> np.ndarray:
        """The text's probabilities, shape ``(n_labels,)``, for these ids (the text's or the baseline's)."""
        import torch

        with torch.no_grad():
            rows = self.forward(ids, *self.extra)  # (n_windows, n_labels), each 1/n of the text's
        return rows.sum(0).double().cpu().numpy()


def _warn_if_coarse(delta: float, change: float, steps: int) -> None:
    # A model whose output switches within a short stretch of the path needs many points; the delta shows it.
    if abs(delta) > 0.1 * max(abs(change), 0.01):
        logger.warning(
            "the scores miss the change of probability (%+.3f) by %+.3f (convergence delta): %d integration steps "
            "are too few for this model and text; raise steps",
            change,
            delta,
            steps,
        )


def _pad_id(tokenizer) -> int:
    for token_id in (tokenizer.pad_token_id, tokenizer.unk_token_id):
        if token_id is not None:
            return int(token_id)
    raise ModelError("explanations need a [PAD] or [UNK] token for the baseline, and this tokenizer has neither")


def _predicted(classifier: TextClassifier, probs: np.ndarray) -> np.ndarray:
    """A boolean per label: whether the decision rule predicts it for these probabilities."""
    decided = classifier.decision.decide(probs[None, :])[0]
    if classifier.multi_label:
        return np.asarray(decided, dtype=bool)
    return np.arange(len(probs)) == decided


def _target(classifier: TextClassifier, probs: np.ndarray, label: str | None) -> int:
    if label is None:
        if classifier.multi_label:
            return int(np.argmax(probs))
        return int(np.flatnonzero(_predicted(classifier, probs))[0])
    if label not in classifier.labels:
        raise ConfigError(f"label {label!r} is not one of the model's labels {sorted(classifier.labels)}")
    return classifier.labels.index(label)


def _words(
    text: str, scores: np.ndarray, word_ids: Sequence[Sequence[int | None]], offsets: Sequence[Sequence[tuple]]
) -> tuple[WordAttribution, ...]:
    """Token scores ``(n_windows, seq)`` summed into words: by word id across windows, span = its pieces' union."""
    spans: dict[int, list[int]] = {}
    totals: dict[int, float] = {}
    for window, (words, window_offsets) in enumerate(zip(word_ids, offsets)):
        for position, (word, (start, end)) in enumerate(zip(words, window_offsets)):
            if word is None:
                continue
            span = spans.setdefault(word, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
            totals[word] = totals.get(word, 0.0) + float(scores[window, position])
    return tuple(
        WordAttribution(text[start:end], start, end, totals[word])
        for word, (start, end) in sorted(spans.items(), key=lambda item: item[1])
    )


# -- rendering -------------------------------------------------------------------------------------------------------


def _summary(explanation: Explanation) -> list[str]:
    e = explanation
    kind = "predicted" if e.predicted else "not predicted"
    lines = [
        f"{e.label} ({kind}): p={e.probability:.4f}, baseline p={e.baseline_probability:.4f}; "
        f"{e.steps} steps, convergence delta {e.convergence_delta:+.2g}"
        + (f"; {e.windows} windows" if e.windows > 1 else "")
    ]
    if e.truncated:
        seen = e.words[-1].end if e.words else 0
        lines.append(f"the model saw only the first {seen} characters (max_length); later words have no score")
    return lines


def _segments(explanation: Explanation) -> list[tuple[str, WordAttribution | None, float]]:
    """The text cut into (piece, word, weight): the words with their weights, the gaps between them with None, 0."""
    out: list[tuple[str, WordAttribution | None, float]] = []
    cursor = 0
    for word, weight in zip(explanation.words, explanation.weights()):
        if word.start > cursor:
            out.append((explanation.text[cursor : word.start], None, 0.0))
        out.append((word.word, word, weight))
        cursor = word.end
    if cursor < len(explanation.text):
        out.append((explanation.text[cursor:], None, 0.0))
    return out


def format_explanation(explanation: Explanation, *, color: bool = False, top: int = 10) -> str:
    """The terminal view: a summary line, the text highlighted (``color``: ANSI backgrounds, green towards the label
    and red away from it), and the ``top`` words by absolute score with their scores and character spans."""
    lines = _summary(explanation)
    if color:
        pieces = []
        for piece, _, weight in _segments(explanation):
            level = min(5, math.ceil(abs(weight) * 5 - 0.5))  # 0 (no colour) below a weight of 0.1
            if level == 0:
                pieces.append(piece)
                continue
            shade = (_ANSI_POSITIVE if weight > 0 else _ANSI_NEGATIVE)[level - 1]
            pieces.append(f"\x1b[30;48;5;{shade}m{piece}\x1b[0m")
        lines.append("".join(pieces))
    lines.append(f"top words (score: change of p({explanation.label})):")
    width = max((len(w.word) for w in explanation.top(top)), default=0)
    for word in explanation.top(top):
        lines.append(f"  {word.score:+.4f}  {word.word:<{width}}  chars {word.start}-{word.end}")
    return "\n".join(lines)


def explanation_html(explanation: Explanation) -> str:
    """A self-contained HTML page: the text with each word's background by the sign and size of its score (green
    towards the label, red away from it; the score in its tooltip), the summary above it."""
    spans = []
    for piece, word, weight in _segments(explanation):
        if word is None:
            spans.append(html.escape(piece))
            continue
        r, g, b = _POSITIVE_RGB if weight > 0 else _NEGATIVE_RGB
        spans.append(
            f'<span class="word" data-score="{word.score:.6g}" title="{word.score:+.4f}" '
            f'style="background: rgba({r}, {g}, {b}, {0.8 * abs(weight):.3f})">{html.escape(piece)}</span>'
        )
    summary = "".join(f"<p>{html.escape(line)}</p>" for line in _summary(explanation))
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>bertfit explanation: {html.escape(explanation.label)}</title>\n"
        "<style>body { font: 16px/1.6 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }"
        " .text { white-space: pre-wrap; } .word { border-radius: .2rem; } .legend { color: #666; }</style>\n"
        f"</head>\n<body>\n{summary}\n"
        '<p class="legend">green: the word raises the probability of the label, red: lowers it; '
        "hover a word for its score</p>\n"
        f'<p class="text">{"".join(spans)}</p>\n</body>\n</html>\n'
    )
