"""What every bertfit predictor shares (the PyTorch :class:`~bertfit.model.TextClassifier` and the ONNX
:class:`~bertfit.onnx_model.OnnxClassifier`): the model card's labels and decision rule, and ``predict`` on top of a
subclass's logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .card import ModelCard
from .decision import DecisionRule
from .features import Windowing
from .lexical import LexicalHead

__all__ = ["Predictor"]


class Predictor:
    """A model that scores texts. Subclasses set ``card_`` and ``metrics_`` and define ``_logits(texts)``."""

    card_: ModelCard
    metrics_: dict[str, Any] | None = None
    lexical_: LexicalHead | None = None  # averaged into every prediction when the model has one

    def _check_fitted(self) -> None:
        """Nothing to check for a predictor that is loaded whole; TextClassifier overrides it."""

    def _logits(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def card(self) -> ModelCard:
        """The model card: labels, task kind, windowing, decision rule and training record."""
        self._check_fitted()
        return self.card_

    @property
    def decision(self) -> DecisionRule:
        """The decision rule (argmax, binary threshold or per-label thresholds) saved with the model."""
        return self.card.decision

    @property
    def info_(self) -> dict[str, Any]:
        """The card as saved in ``bertfit.json`` (a copy: change the model through :attr:`card_`)."""
        return self.card.to_info()

    @property
    def labels(self) -> list[str]:
        """Label names in id order."""
        return self.card.labels

    @property
    def positive_label(self) -> str | None:
        """The positive class of a binary task (for precision/recall/F1/specificity), else None."""
        return self.card.positive_label

    @property
    def threshold(self) -> float | None:
        """The decision threshold on the positive class's probability, tuned on validation (binary tasks), or None."""
        return self.decision.threshold

    @property
    def multi_label(self) -> bool:
        """Whether the model predicts a set of labels per text (sigmoid outputs) rather than one label (softmax)."""
        return self.card.multi_label

    @property
    def thresholds(self) -> dict[str, float] | None:
        """A multi-label model's decision threshold per label (tuned on validation; 0.5 where not tuned), else None."""
        if not self.multi_label:
            return None
        return dict(zip(self.labels, self.decision.cuts().tolist()))

    @property
    def max_length(self) -> int:
        """Longest input in tokens; longer texts are truncated, or split into windows (see :attr:`windowing`)."""
        return self.card.max_length

    @property
    def windowing(self) -> Windowing:
        """How texts become model inputs: truncated to :attr:`max_length`, or split into overlapping windows whose
        logits are aggregated per text."""
        return self.card.windowing

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The validation metrics saved with the model, if any."""
        self._check_fitted()
        return self.metrics_

    def predict(self, texts: str | Sequence[str]) -> str | list[str] | list[list[str]]:
        """Predicted label names: one string for a string, a list for a list.

        A multi-label model predicts a list of label names per text instead (in label order; empty when no label
        reaches its threshold): one list for a string, a list of lists for a list.

        >>> clf.predict(["free prize, call now", "see you at 7"])  # doctest: +SKIP
        ['spam', 'ham']
        >>> emotions.predict(["thanks, I love it", "ok"])  # doctest: +SKIP
        [['gratitude', 'love'], []]
        """
        probs = self.predict_proba(texts)
        if isinstance(texts, str):
            return self.decision.predict(probs[None, :])[0]
        return self.decision.predict(probs)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Class probabilities, columns in :attr:`labels` order: a softmax over the labels, or for a multi-label
        model each label's own sigmoid probability (rows need not sum to 1). A model with a lexical head
        (:mod:`bertfit.lexical`) averages the encoder's with the head's.

        Args:
            texts: One text or a list of texts.

        Returns:
            Shape ``(n_texts, n_labels)``, or ``(n_labels,)`` for a single string.
        """
        self._check_fitted()
        batch = [texts] if isinstance(texts, str) else list(texts)
        probs = self.decision.probabilities(self._logits(batch))
        if self.lexical_ is not None:  # the lexical head (bertfit.lexical): the average with TF-IDF's
            probs = self.lexical_.fuse(probs, batch)
        return probs[0] if isinstance(texts, str) else probs

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The decisions on ``probs`` (shape ``(n_texts, n_labels)``) by the saved rule: label indices, or
        (multi-label) a boolean matrix; see :meth:`bertfit.decision.DecisionRule.decide`."""
        return self.decision.decide(probs)

    def prediction_rows(self, texts: list[str]) -> list[dict[str, Any]]:
        """One row per text: ``text``, ``label``, ``score`` and ``prob_<label>`` (multi-label: ``text``, ``labels``
        and ``prob_<label>``); see :meth:`bertfit.decision.DecisionRule.rows`."""
        return self.decision.rows(texts, self.predict_proba(texts))

    def with_precision(self, precision: str) -> Predictor:
        """A predictor sharing this one's weights that predicts in ``precision`` (an ONNX export runs in the
        arithmetic it was exported with: itself)."""
        return self
