"""How a model's outputs become labels: the one decision rule, and the rows every consumer writes from it.

A :class:`DecisionRule` turns logits into probabilities (a softmax over single labels, a sigmoid per label for a
multi-label model, both of the logits divided by the temperature fitted on validation: :mod:`bertfit.calibration`)
and probabilities into decisions:

- **argmax**: the most probable label;
- **binary threshold**: for a two-label model, the positive label exactly when its probability reaches the threshold
  tuned on validation;
- **per-label thresholds**: for a multi-label model, each label whose probability reaches its own threshold (0.5
  where none was tuned); a text may get several labels or none.

``predict``, ``predict_file``, ``BatchPredictor``, the server, the report and ONNX exports all decide through
:meth:`DecisionRule.decide` and write their rows with :meth:`DecisionRule.rows`, :meth:`~DecisionRule.records`,
:meth:`~DecisionRule.response` or :meth:`~DecisionRule.columns`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .exceptions import DataError, ModelError

__all__ = ["DecisionRule", "multi_hot"]


@dataclass(frozen=True)
class DecisionRule:
    """The decision of a model over its labels.

    Args:
        labels: Label names in id order.
        multi_label: A sigmoid per label and a set of labels per text, rather than a softmax and one label.
        positive_label: The positive class of a binary task (its precision, recall, F1 and threshold), else None.
        threshold: A binary task's tuned threshold on the positive label's probability; None: argmax.
        thresholds: A multi-label task's tuned threshold per label (labels left out: 0.5); None: 0.5 for all.
        temperature: The temperature every logit is divided by before the softmax or sigmoid, fitted on validation
            (see :mod:`bertfit.calibration`); 1: uncalibrated.

    >>> rule = DecisionRule(("ham", "spam"), positive_label="spam", threshold=0.25)
    >>> rule.decide(np.array([[0.7, 0.3], [0.2, 0.8]])).tolist(), rule.kind
    ([1, 1], 'binary threshold')
    >>> DecisionRule(("joy", "love"), multi_label=True, thresholds={"love": 0.25}).predict(np.array([[0.7, 0.3]]))
    [['joy', 'love']]
    """

    labels: tuple[str, ...]
    multi_label: bool = False
    positive_label: str | None = None
    threshold: float | None = None
    thresholds: Mapping[str, float] | None = None
    temperature: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", {k: float(v) for k, v in self.thresholds.items()})

    @property
    def kind(self) -> str:
        """``argmax``, ``binary threshold`` or ``per-label thresholds``."""
        if self.multi_label:
            return "per-label thresholds"
        return "binary threshold" if self._binary_threshold() else "argmax"

    def _binary_threshold(self) -> bool:
        return self.threshold is not None and len(self.labels) == 2 and self.positive_label in self.labels

    def cuts(self) -> np.ndarray:
        """A multi-label model's threshold per label in label order, shape ``(n_labels,)``."""
        saved = self.thresholds or {}
        return np.array([saved.get(label, 0.5) for label in self.labels], dtype=np.float64)

    def untuned(self) -> DecisionRule:
        """This rule without tuned thresholds: argmax, or 0.5 for every label (the temperature stays)."""
        return replace(self, threshold=None, thresholds=None)

    # -- deciding ------------------------------------------------------------------------------------------------

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits ``(n_texts, n_labels)`` -> probabilities: a sigmoid per label (multi-label) or a softmax, of
        ``logits / temperature``."""
        logits = np.asarray(logits) / self.temperature
        if self.multi_label:
            from scipy.special import expit  # no overflow warning for large negative logits

            return expit(logits)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        exp = np.exp(shifted)
        return exp / exp.sum(axis=-1, keepdims=True)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The decisions on ``probs`` (shape ``(n_texts, n_labels)``): a label index per row (shape ``(n_texts,)``),
        or for a multi-label model a boolean matrix of the shape of ``probs`` (a row may be all False)."""
        probs = np.asarray(probs)
        if self.multi_label:
            return probs >= self.cuts()
        if len(probs) == 0:
            return np.zeros(0, dtype=np.int64)
        if not self._binary_threshold():
            return np.argmax(probs, axis=1)
        pos = self.labels.index(self.positive_label)
        return np.where(probs[:, pos] >= self.threshold, pos, 1 - pos)

    def margins(self, probs: np.ndarray) -> np.ndarray:
        """Per row of ``probs``, the least change of its probabilities (the largest absolute change of any one of
        them) that can change :meth:`decide`'s decision: the distance to the threshold (the nearest one, for a
        multi-label model), or half the gap between the two most probable labels; shape ``(n_texts,)``.

        >>> DecisionRule(("a", "b", "c")).margins(np.array([[0.6, 0.3, 0.1]])).round(3)
        array([0.15])
        """
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) == 0:
            return np.zeros(0)
        if self.multi_label:
            return np.abs(probs - self.cuts()).min(axis=1)
        if self._binary_threshold():
            return np.abs(probs[:, self.labels.index(self.positive_label)] - self.threshold)
        top = np.sort(probs, axis=1)[:, -2:]
        return (top[:, 1] - top[:, 0]) / 2

    def names(self, decisions: np.ndarray) -> list[str] | list[list[str]]:
        """The label names of :meth:`decide`'s output: a name per row, or (multi-label) a list of names per row.

        >>> DecisionRule(("joy", "love"), multi_label=True).names(np.array([[True, False], [True, True]]))
        [['joy'], ['joy', 'love']]
        """
        if self.multi_label:  # a boolean matrix
            return [[label for label, chosen in zip(self.labels, row) if chosen] for row in decisions]
        return [self.labels[k] for k in decisions]

    def predict(self, probs: np.ndarray) -> list[str] | list[list[str]]:
        """The predicted label names (label sets for a multi-label model) of ``probs``."""
        return self.names(self.decide(probs))

    # -- the rows written from the decisions ---------------------------------------------------------------------

    def rows(self, texts: Sequence[str], probs: np.ndarray) -> list[dict[str, Any]]:
        """Prediction rows: ``text``, ``label``, ``score`` (the probability of that label) and ``prob_<label>`` per
        class; a multi-label model's rows hold ``labels`` (the predicted list) instead of ``label`` and ``score``."""
        return [
            {"text": text, **predicted, **_prob_columns(self.labels, p)}
            for text, predicted, p in zip(texts, self._predicted(probs), probs)
        ]

    def records(
        self, texts: Sequence[str], y_true: Sequence[str] | Sequence[Sequence[str]], probs: np.ndarray
    ) -> list[dict[str, Any]]:
        """Validation records for the report: the rows of :meth:`rows` with ``true_label`` (``true_labels``: a list)
        after the text, probabilities rounded to 6 digits."""
        truth = "true_labels" if self.multi_label else "true_label"
        records = []
        for text, true, predicted, p in zip(texts, y_true, self._predicted(probs, digits=6), probs):
            records.append(
                {"text": text, truth: list(true) if self.multi_label else true, **predicted}
                | _prob_columns(self.labels, p, digits=6)
            )
        return records

    def response(self, probs: np.ndarray) -> dict[str, Any]:
        """One text's answer of the server: ``label`` and ``score`` (multi-label: ``labels``), and
        ``probabilities`` of every label."""
        (predicted,) = self._predicted(np.asarray(probs)[None, :])
        return {**predicted, "probabilities": {label: float(p) for label, p in zip(self.labels, probs)}}

    def columns(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Column arrays for a batch engine: ``label`` and ``score`` (multi-label: ``labels``, a 1-d object array of
        lists), then ``prob_<label>``."""
        decisions = self.decide(probs)
        out: dict[str, np.ndarray] = {}
        if self.multi_label:
            out["labels"] = _object_column(self.names(decisions))
        else:
            out["label"] = np.array(self.names(decisions), dtype=object)
            out["score"] = probs[np.arange(len(probs)), decisions]
        for k, label in enumerate(self.labels):
            out[f"prob_{label}"] = probs[:, k]
        return out

    def _predicted(self, probs: np.ndarray, digits: int | None = None) -> list[dict[str, Any]]:
        decisions = self.decide(probs)
        if self.multi_label:
            return [{"labels": names} for names in self.names(decisions)]
        return [{"label": self.labels[k], "score": _number(p[k], digits)} for p, k in zip(probs, decisions)]

    # -- bertfit.json --------------------------------------------------------------------------------------------

    def to_info(self) -> dict[str, Any]:
        """The entries of ``bertfit.json``: ``positive_label``, ``temperature``, and ``threshold`` / ``thresholds``
        when tuned."""
        info: dict[str, Any] = {"positive_label": self.positive_label, "temperature": self.temperature}
        if self.threshold is not None:
            info["threshold"] = self.threshold
        if self.thresholds is not None:
            info["thresholds"] = dict(self.thresholds)
        return info

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> DecisionRule:
        """The rule saved in a ``bertfit.json`` mapping (``labels``, ``multi_label``, ``positive_label``,
        ``threshold``, ``thresholds``, ``temperature``: 1 in files written before calibration)."""
        threshold = info.get("threshold")
        return cls(
            tuple(info["labels"]),
            multi_label=bool(info.get("multi_label")),
            positive_label=info.get("positive_label"),
            threshold=float(threshold) if isinstance(threshold, (int, float)) else None,
            thresholds=info.get("thresholds"),
            temperature=_temperature(info.get("temperature", 1.0)),
        )


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ModelError(
            f"bertfit.json has temperature {value!r}, not a positive number; it was edited: set it to 1 "
            "(uncalibrated) or train the model again"
        )
    return float(value)


def _prob_columns(labels: Sequence[str], probs: np.ndarray, digits: int | None = None) -> dict[str, float]:
    return {f"prob_{label}": _number(p, digits) for label, p in zip(labels, probs)}


def _number(value, digits: int | None) -> float:
    return float(value) if digits is None else round(float(value), digits)


def _object_column(lists: list[list[str]]) -> np.ndarray:
    # A 1-d object array of lists; np.array(lists) would make a 2-d array of names when the lists are of equal length.
    column = np.empty(len(lists), dtype=object)
    for i, values in enumerate(lists):
        column[i] = values
    return column


def multi_hot(rows: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """Label sets as a 0/1 matrix of shape ``(n_rows, n_labels)``, columns in ``labels`` order.

    Raises:
        DataError: A row holds a label that is not in ``labels``.

    >>> multi_hot([("b",), ("a", "b"), ()], ["a", "b"]).tolist()
    [[0, 1], [1, 1], [0, 0]]
    """
    index = {label: k for k, label in enumerate(labels)}
    matrix = np.zeros((len(rows), len(labels)), dtype=np.int8)
    for i, row in enumerate(rows):
        try:
            matrix[i, [index[label] for label in row]] = 1
        except KeyError as err:
            raise DataError(
                f"label {err.args[0]!r} of row {i + 1} is not one of the labels {list(labels)}; check the labels"
            ) from None
    return matrix
