"""The lexical head: TF-IDF + logistic regression over every word of a text, averaged with the encoder's probabilities.

An encoder sees at most ``max_length`` tokens per window and, on long documents, trains on the first window only;
TF-IDF sees every word of the document. On 20 Newsgroups the two make different mistakes, and their average beats
both (see benchmarks/RESULTS.md). :func:`fit_lexical` fits the head on the training split (the same model as the
``tfidf_logreg`` baseline, which then reuses it) and :func:`fusion_gain` decides on validation whether to keep it:
under ``--lexical auto`` it is kept only when the average beats the encoder alone on the selection metric by more
than :data:`~bertfit.metrics.NOISE_STANDARD_ERRORS` paired-bootstrap standard errors, the rule that keeps a tuned
binary threshold. A kept head is saved beside the weights (``lexical.json``: the vectorizer's options and
vocabulary; ``lexical.safetensors``: idf, coefficients, intercepts; no pickle) and every prediction (predict, serve,
evaluate, ONNX exports, the scikit-learn estimator) averages it in. Single-label tasks only.

>>> import numpy as np
>>> head = fit_lexical(["free prize now", "see you soon", "win cash now", "lunch at noon"],
...                    ["spam", "ham", "spam", "ham"], ("ham", "spam"))
>>> head.vocabulary  # min_df=2: the one term seen in two training texts
['now']
>>> head.probabilities(["call now"]).argmax(axis=1).tolist()
[1]
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import DataError, ModelError
from .metrics import BOOTSTRAP_RESAMPLES, NOISE_STANDARD_ERRORS

__all__ = ["LexicalHead", "Fusion", "fit_lexical", "fit_lexical_head", "fusion_gain", "load_lexical", "LEXICAL_FILES"]

logger = logging.getLogger(__name__)

LEXICAL_FILES = ("lexical.json", "lexical.safetensors")
# The share of the lexical head in the average: equal weights, fixed (not tuned on the validation texts that then
# judge it).
WEIGHT = 0.5
# The vectorizer of the tfidf_logreg baseline: word 1-2 grams, sublinear tf, one-character words kept ("u", "2").
_TOKEN_PATTERN = r"(?u)\b\w+\b"
_WORDS = re.compile(_TOKEN_PATTERN)
_TINY = 1e-12  # the floor of a probability before its log


def _terms(text: str, ngram_range: tuple[int, int]) -> list[str]:
    """The word n-grams of ``text``, as scikit-learn's word analyzer lists them (lowercase, no stop words).

    >>> _terms("Win CASH now", (1, 2))
    ['win', 'cash', 'now', 'win cash', 'cash now']
    """
    words = _WORDS.findall(text.lower())
    low, high = ngram_range
    terms = list(words) if low == 1 else []
    for n in range(max(low, 2), min(high, len(words)) + 1):
        terms.extend(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    return terms


@dataclass
class LexicalHead:
    """A fitted TF-IDF + logistic-regression model whose probability columns follow ``labels``.

    ``vocabulary`` lists the terms in column order; ``idf`` is their inverse document frequency; ``coef`` and
    ``intercept`` are the multinomial logistic regression's, one row per label (a binary model's first row is 0).
    """

    labels: tuple[str, ...]
    vocabulary: list[str]
    idf: np.ndarray  # (n_terms,)
    coef: np.ndarray  # (n_labels, n_terms)
    intercept: np.ndarray  # (n_labels,)
    ngram_range: tuple[int, int] = (1, 2)
    weight: float = WEIGHT
    temperature: float = 1.0  # fitted on validation, as the encoder's (a logistic regression is underconfident)
    # The average's own temperature, fitted on validation after the average (an average of two calibrated
    # distributions is not calibrated: it is underconfident where they agree): p ∝ average ** (1 / T).
    fused_temperature: float = 1.0
    _columns: dict[str, int] | None = field(default=None, repr=False, compare=False)  # term -> column

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """The logistic regression's logits of ``texts``, ``(n_texts, n_labels)``, before the temperature.

        A text's features are its L2-normalized sublinear TF-IDF row over :attr:`vocabulary`, as scikit-learn's
        ``TfidfVectorizer`` computes them (lowercase, ``\\b\\w+\\b`` words, word n-grams); they are computed here
        with numpy alone, so that a prediction does not import scikit-learn.
        """
        if self._columns is None:
            self._columns = {term: i for i, term in enumerate(self.vocabulary)}
        rows, columns = [], []
        for row, text in enumerate(texts):
            found = [self._columns[t] for t in _terms(text, self.ngram_range) if t in self._columns]
            rows.extend([row] * len(found))
            columns.extend(found)
        n = len(texts)
        out = np.tile(np.asarray(self.intercept, dtype=np.float64), (n, 1))
        if not columns:
            return out
        # (text, term) pairs with their counts: the sparse count matrix, coordinate by coordinate
        pairs, counts = np.unique(np.asarray(rows, np.int64) * len(self.vocabulary) + columns, return_counts=True)
        row, column = np.divmod(pairs, len(self.vocabulary))
        weight = (1.0 + np.log(counts)) * np.asarray(self.idf, dtype=np.float64)[column]  # sublinear tf x idf
        weight /= np.sqrt(np.bincount(row, weights=weight**2, minlength=n))[row]  # each row's L2 norm
        coef = np.asarray(self.coef, dtype=np.float64)
        for label in range(coef.shape[0]):
            out[:, label] += np.bincount(row, weights=weight * coef[label, column], minlength=n)
        return out

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The head's own class probabilities of ``texts`` at its temperature, ``(n_texts, n_labels)``."""
        return self._at_temperature(self.scores(texts))

    def _at_temperature(self, scores: np.ndarray) -> np.ndarray:
        from scipy.special import softmax

        return softmax(scores / self.temperature, axis=1)

    def fuse(self, probs: np.ndarray, texts: Sequence[str] | None = None, lexical: np.ndarray | None = None):
        """``probs`` (the encoder's, ``(n_texts, n_labels)``) averaged with the head's probabilities of ``texts`` (or
        the ``lexical`` ones, computed already), weighted by :attr:`weight`."""
        lexical = self.probabilities(texts) if lexical is None else lexical
        average = (1.0 - self.weight) * probs + self.weight * lexical
        if self.fused_temperature == 1.0:
            return average
        from scipy.special import softmax

        return softmax(np.log(np.maximum(average, _TINY)) / self.fused_temperature, axis=1)  # the argmax is unchanged

    def save(self, directory: str | Path) -> None:
        """Write ``lexical.json`` and ``lexical.safetensors`` into ``directory``."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        meta = {"format": 1, "labels": list(self.labels), "weight": self.weight, "temperature": self.temperature}
        meta["fused_temperature"] = self.fused_temperature
        meta["ngram_range"] = list(self.ngram_range)
        meta["vocabulary"] = self.vocabulary
        (directory / LEXICAL_FILES[0]).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
        arrays = {"idf": self.idf, "coef": self.coef, "intercept": self.intercept}
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        save_file(arrays, directory / LEXICAL_FILES[1])


def load_lexical(directory: str | Path, labels: Sequence[str]) -> LexicalHead | None:
    """The lexical head saved in a model directory, or None when it has none.

    Raises:
        ModelError: Its files are incomplete, unreadable, or name other labels than the model's.
    """
    directory = Path(directory)
    present = [name for name in LEXICAL_FILES if (directory / name).is_file()]
    if not present:
        return None
    if len(present) != len(LEXICAL_FILES):
        raise ModelError(f"{directory} has {present[0]} but not the rest of {list(LEXICAL_FILES)}; train it again")
    from safetensors.numpy import load_file

    try:
        meta = json.loads((directory / LEXICAL_FILES[0]).read_text(encoding="utf-8"))
        arrays = load_file(directory / LEXICAL_FILES[1])
        head = LexicalHead(
            tuple(meta["labels"]),
            list(meta["vocabulary"]),
            arrays["idf"].astype(np.float64),
            arrays["coef"].astype(np.float64),
            arrays["intercept"].astype(np.float64),
            tuple(meta["ngram_range"]),
            float(meta["weight"]),
            float(meta["temperature"]),
            float(meta["fused_temperature"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"could not read the lexical head of {directory}: {err}; train the model again") from None
    if list(head.labels) != list(labels) or head.coef.shape != (len(labels), len(head.vocabulary)):
        raise ModelError(
            f"the lexical head of {directory} does not match the model (labels {list(head.labels)} against "
            f"{list(labels)}); train the model again"
        )
    return head


def fit_lexical(texts: Sequence[str], labels: Sequence[str], label_order: Sequence[str]) -> LexicalHead:
    """Fit TF-IDF (word 1-2 grams seen in at least 2 texts, sublinear tf) + a balanced logistic regression.

    On tiny data where no term occurs twice every term counts.

    Raises:
        DataError: The texts hold no words (see :func:`tfidf_features`).
    """
    from sklearn.linear_model import LogisticRegression

    vectorizer, features = tfidf_features(texts)
    order = list(label_order)
    y = np.array([order.index(label) for label in labels])
    classifier = LogisticRegression(max_iter=1000, class_weight="balanced").fit(features, y)
    coef = np.zeros((len(order), features.shape[1]))
    intercept = np.zeros(len(order))
    if len(classifier.classes_) == 2:  # one row: the log-odds of classes_[1]
        coef[classifier.classes_[1]], intercept[classifier.classes_[1]] = classifier.coef_[0], classifier.intercept_[0]
    else:
        coef[classifier.classes_], intercept[classifier.classes_] = classifier.coef_, classifier.intercept_
    terms = vectorizer.get_feature_names_out().tolist()
    # Held at the float32 values it is saved in, so that a saved head predicts what the trained one did.
    idf, coef, intercept = (
        np.asarray(v, dtype=np.float32).astype(np.float64) for v in (vectorizer.idf_, coef, intercept)
    )
    return LexicalHead(tuple(order), terms, idf, coef, intercept)


def tfidf_features(texts: Sequence[str], source: str = "the training data"):
    """A TF-IDF vectorizer of word 1-2 grams (sublinear tf; one-character words kept: "u", "2" in SMS) fitted on
    ``texts``, and their rows. ``min_df=2`` drops typos and one-off tokens; on tiny data that may leave no terms, then
    every term counts.

    Raises:
        DataError: The texts hold no words.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    for min_df in (2, 1):
        options = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": min_df}
        vectorizer = TfidfVectorizer(**options, token_pattern=_TOKEN_PATTERN)
        try:
            return vectorizer, vectorizer.fit_transform(list(texts))  # (n_texts, n_terms), sparse
        except ValueError:  # "empty vocabulary" / "no terms remain"
            continue
    raise DataError(f"the texts of {source} hold no words for TF-IDF; check --text-column")


@dataclass
class Fusion:
    """What the validation stage learned about the lexical head: whether it is kept and why."""

    mode: str  # auto, on
    kept: bool
    metric: str
    encoder: float  # the metric of the encoder alone, at argmax
    fused: float  # of the average
    gain: float
    standard_error: float
    seconds: float
    terms: int
    reason: str
    temperature: float = 1.0  # the average's (LexicalHead.fused_temperature)
    ece_before: float | None = None  # validation ECE of the average at temperature 1
    ece_after: float | None = None  # and at ``temperature``

    def to_info(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> Fusion:
        return cls(**{k: info[k] for k in cls.__dataclass_fields__ if k in info})


def fusion_gain(
    y_true: Sequence[int], encoder: np.ndarray, fused: np.ndarray, metric: str, *, seed: int = 0
) -> tuple[float, float, float, float]:
    """The metric of the encoder's and of the fused argmax decisions on these texts, the gain, and its standard error
    over :data:`~bertfit.metrics.BOOTSTRAP_RESAMPLES` paired bootstrap resamples (both decisions of each text drawn
    together). ``metric``: accuracy, weighted_f1, f1 (of label 1) or macro_f1 (any other)."""
    truth = np.asarray(y_true)
    a, b = encoder.argmax(axis=1), fused.argmax(axis=1)
    k = encoder.shape[1]
    rng = np.random.default_rng(seed)
    samples = [np.arange(len(truth))] + [rng.integers(0, len(truth), len(truth)) for _ in range(BOOTSTRAP_RESAMPLES)]
    pairs = np.array([(_score(truth[i], a[i], k, metric), _score(truth[i], b[i], k, metric)) for i in samples])
    gains = pairs[:, 1] - pairs[:, 0]  # (1 + resamples,): these texts, then the resamples
    return float(pairs[0, 0]), float(pairs[0, 1]), float(gains[0]), float(np.std(gains[1:]))


def keep_reason(gain: float, error: float, n: int, metric: str) -> tuple[bool, str]:
    """Whether a gain is above the noise, and a sentence saying so."""
    margin = NOISE_STANDARD_ERRORS * error
    kept = gain > margin
    verdict = "above" if kept else "not above"
    return kept, (
        f"the average with TF-IDF gains {gain:+.4f} {metric} over the encoder alone, {verdict} the noise of {n} "
        f"validation texts ({NOISE_STANDARD_ERRORS:g} standard errors: {margin:.4f})"
    )


def _score(truth: np.ndarray, predicted: np.ndarray, k: int, metric: str) -> float:
    # One single-label metric from the confusion matrix of label indices.
    cm = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k).astype(np.float64)
    tp, support, called = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    if metric == "accuracy":
        return float(tp.sum() / max(cm.sum(), 1))
    f1 = 2 * tp / np.maximum(support + called, 1)
    if metric == "f1":
        return float(f1[1])
    if metric == "weighted_f1":
        return float((f1 * support).sum() / max(support.sum(), 1))
    present = (support + called) > 0
    return float(f1[present].mean())


def fit_lexical_head(
    train,
    validation,
    labels: Sequence[str],
    probs: np.ndarray,
    metric: str,
    mode: str = "auto",
    calibrate: bool = True,
):
    """The validation stage's part: fit the head on ``train`` (TextDatasets), its temperature on ``validation``, and
    decide whether to keep it (``mode`` auto: above the noise; on: always); with ``calibrate``, also fit the
    average's temperature on ``validation``.

    Args:
        probs: The encoder's calibrated validation probabilities, ``(n_validation, n_labels)``.
        metric: The selection metric the gain is measured in (``loss`` and ``mcc`` are measured as macro-F1).

    Returns:
        ``(head, fusion, fused)``: the head, what it did (:class:`Fusion`) and the averaged validation probabilities.
    """
    from .calibration import fit_temperature, reliability

    start = time.perf_counter()
    head = fit_lexical(train.texts, train.labels, labels)
    order = {label: i for i, label in enumerate(labels)}
    truth = np.array([order[label] for label in validation.labels])
    scores = head.scores(validation.texts)  # (n_validation, n_labels): one TF-IDF pass for the temperature and after
    head.temperature, _ = fit_temperature(scores, truth, multi_label=False)
    lexical = head._at_temperature(scores)
    average = head.fuse(probs, lexical=lexical)
    if calibrate:
        head.fused_temperature, _ = fit_temperature(np.log(np.maximum(average, _TINY)), truth, multi_label=False)
    fused = head.fuse(probs, lexical=lexical)
    measured = metric if metric in ("accuracy", "weighted_f1", "f1") else "macro_f1"
    encoder, averaged, gain, error = fusion_gain(truth, probs, fused, measured)
    kept, reason = keep_reason(gain, error, len(truth), measured)
    if mode == "on":
        kept, reason = True, reason + "; kept: --lexical on"
    elif not kept:
        reason += "; not kept (--lexical on keeps it)"
    seconds = time.perf_counter() - start
    fusion = Fusion(mode, kept, measured, encoder, averaged, gain, error, seconds, len(head.vocabulary), reason)
    fusion.temperature = head.fused_temperature
    fusion.ece_before = reliability(average, truth, multi_label=False).ece
    fusion.ece_after = reliability(fused, truth, multi_label=False).ece
    logger.info(
        "lexical head (TF-IDF + logistic regression, %d terms): %s; the average's temperature %.4f (ECE %.4f -> %.4f)",
        len(head.vocabulary),
        reason,
        fusion.temperature,
        fusion.ece_before,
        fusion.ece_after,
    )
    return head, fusion, fused
