"""BertfitClassifier: bertfit as a scikit-learn estimator, for ``GridSearchCV``, ``cross_val_score``,
``CalibratedClassifierCV`` and pipelines.

``__init__`` only stores the options (scikit-learn's rule, so that ``clone`` and ``set_params`` work); ``fit`` builds
a :class:`~bertfit.config.TrainConfig` from them and runs :func:`bertfit.train` in memory (nothing is written). The
fitted :class:`~bertfit.model.TextClassifier` is ``classifier_``; ``save`` writes its model directory, which
``TextClassifier.from_pretrained`` and :meth:`BertfitClassifier.from_pretrained` load.

``classes_`` holds the labels as given to ``fit``, sorted as ``numpy.unique`` sorts them (as every scikit-learn
classifier does), and ``predict_proba``'s columns follow it; ``predict`` decides by the model's saved rule (a binary
model's threshold tuned on validation; ``threshold_metric="none"`` for the most probable class).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from .config import TrainConfig
from .data import TextDataset
from .exceptions import ConfigError, DataError, NotFittedError
from .model import TextClassifier
from .train import train

__all__ = ["BertfitClassifier", "EstimatorNotFittedError"]

_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
# Options that make no sense for an in-memory estimator: it is saved with save(path).
_REFUSED_CONFIG = ("output_dir", "overwrite", "resume")


class EstimatorNotFittedError(NotFittedError, SklearnNotFittedError):
    """A :class:`BertfitClassifier` used before ``fit``: bertfit's NotFittedError and scikit-learn's at once."""


class BertfitClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a BERT-family encoder on texts, with the scikit-learn estimator API.

    The parameters are :class:`~bertfit.config.TrainConfig` options of the same names and defaults, except
    ``baselines`` (off: a grid search should not fit three baselines per candidate); ``config`` holds any other
    TrainConfig option (``{"long_text": "truncate", "eval_batch_size": 64}``).

    Args:
        model_name_or_path: Encoder to fine-tune (local directory or hub id); None: the embedded default model.
        epochs: Training epochs; None: 4, or 3 for long documents (see :class:`bertfit.TrainConfig`).
        learning_rate: Peak learning rate of AdamW.
        batch_size: Texts per training step.
        max_length: Longest input in tokens; None: chosen from the training texts.
        class_weights: ``"none"``, ``"balanced"`` or a dict of label name to weight.
        warmup_ratio: Share of steps with a linear learning-rate warm-up.
        weight_decay: AdamW weight decay.
        seed: Random seed of the validation split, initialization and shuffling.
        val_size: Share of ``X`` held out to pick the best epoch, when ``fit`` gets no ``validation_data``.
        metric_for_best_model: Validation metric that picks the epoch kept.
        early_stopping_patience: Stop after this many evaluations without improvement; None: never.
        threshold_metric: Binary tasks: what the decision threshold is tuned for on validation (``"none"``: argmax).
        precision: Training arithmetic: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        baselines: Also fit the majority, TF-IDF and frozen-embedding baselines (seen in ``classifier_.card``).
        config: Any other TrainConfig options, as a dict (not the ones above, nor ``output_dir``).

    >>> from sklearn.model_selection import GridSearchCV  # doctest: +SKIP
    >>> search = GridSearchCV(BertfitClassifier(epochs=2), {"learning_rate": [5e-5, 1e-4]}, cv=3)  # doctest: +SKIP
    >>> search.fit(texts, labels).best_params_  # doctest: +SKIP
    {'learning_rate': 0.0001}
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        epochs: float | None = _DEFAULTS["epochs"],
        learning_rate: float = _DEFAULTS["learning_rate"],
        batch_size: int = _DEFAULTS["batch_size"],
        max_length: int | None = _DEFAULTS["max_length"],
        class_weights: str | dict[str, float] = _DEFAULTS["class_weights"],
        warmup_ratio: float = _DEFAULTS["warmup_ratio"],
        weight_decay: float = _DEFAULTS["weight_decay"],
        seed: int = _DEFAULTS["seed"],
        val_size: float = _DEFAULTS["val_size"],
        metric_for_best_model: str = _DEFAULTS["metric_for_best_model"],
        early_stopping_patience: int | None = _DEFAULTS["early_stopping_patience"],
        threshold_metric: str = _DEFAULTS["threshold_metric"],
        precision: str = _DEFAULTS["precision"],
        baselines: bool = False,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.class_weights = class_weights
        self.warmup_ratio = warmup_ratio
        self.weight_decay = weight_decay
        self.seed = seed
        self.val_size = val_size
        self.metric_for_best_model = metric_for_best_model
        self.early_stopping_patience = early_stopping_patience
        self.threshold_metric = threshold_metric
        self.precision = precision
        self.baselines = baselines
        self.config = config

    # -- training ------------------------------------------------------------------------------------------------

    def train_config(self) -> TrainConfig:
        """The TrainConfig that ``fit`` trains with: the parameters, plus ``config``'s other options.

        Raises:
            ConfigError: An invalid option, an option given both as a parameter and in ``config``, or ``output_dir``.
        """
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "config"}
        extra = self.config or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(
                f"config must be a dict of TrainConfig options, got {type(extra).__name__}; e.g. "
                "config={'long_text': 'truncate'}"
            )
        twice = sorted(set(extra) & set(params))
        if twice:
            raise ConfigError(
                f"{', '.join(twice)} given in config and as a parameter of {type(self).__name__}; set it as the "
                "parameter only (so that set_params and GridSearchCV see it)"
            )
        refused = sorted(set(extra) & set(_REFUSED_CONFIG))
        if refused:
            raise ConfigError(
                f"config option(s) {', '.join(refused)} do not apply to {type(self).__name__}, which trains in "
                "memory; call save(path) after fit to write the model directory"
            )
        return TrainConfig.from_dict({**extra, **params})

    def fit(self, X, y, *, validation_data: tuple[Any, Any] | None = None) -> BertfitClassifier:
        """Fine-tune on texts ``X`` and labels ``y`` (nothing is written to disk).

        Args:
            X: Texts: a list, a 1-D array or a pandas Series of strings.
            y: One label per text (strings, integers, ...), or one list of labels per text for a multi-label model.
            validation_data: ``(texts, labels)`` that pick the best epoch and tune the decision threshold; default:
                a stratified ``val_size`` share of ``X``.

        Returns:
            self, fitted.

        Raises:
            DataError: Unusable texts or labels.
            ConfigError: Invalid options.
            TrainingError: The loss became NaN or infinite.
        """
        config = self.train_config()
        texts, labels = _texts(X), _labels(y, len(X))
        multi_label = _is_multi_label(labels)
        if not multi_label:
            from sklearn.utils.multiclass import check_classification_targets

            check_classification_targets(labels)  # scikit-learn's error for continuous targets
        validation = None
        if validation_data is not None:
            val_texts, val_labels = validation_data
            validation = TextDataset(_texts(val_texts), _labels(val_labels, len(val_texts)), "validation_data")
        classifier = train(config, TextDataset(texts, labels, "X, y"), validation)
        # Labels split at config's label_sep are known by their names only.
        split = classifier.multi_label and not multi_label
        self._set_fitted(classifier, list(classifier.labels) if split else _label_values(labels, multi_label))
        return self

    def _set_fitted(self, classifier: TextClassifier, values: list[Any]) -> None:
        self.classifier_ = classifier
        self.multi_label_ = classifier.multi_label
        # classes_: the labels as given, sorted as numpy sorts them; bertfit names each label by its string.
        self.classes_ = np.unique(np.asarray(values))
        names = {name: k for k, name in enumerate(classifier.labels)}
        self._columns = np.array([names[str(value)] for value in self.classes_])  # classes_ -> model label id
        self._classes_by_id = self.classes_[np.argsort(self._columns)]  # model label id -> classes_ value

    # -- prediction ----------------------------------------------------------------------------------------------

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classifier_")

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise EstimatorNotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments or "
                f"load a trained model with '{type(self).__name__}.from_pretrained' before using this estimator."
            )

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities of shape ``(n_texts, n_classes)``, columns in ``classes_`` order (multi-label: each label's
        own sigmoid probability; rows need not sum to 1)."""
        self._check_fitted()
        return self.classifier_.predict_proba(_texts(X))[:, self._columns]

    def predict(self, X) -> np.ndarray | list[list[Any]]:
        """Predicted labels by the model's decision rule: an array of ``classes_`` values, or (multi-label) one list
        of labels per text, in ``classes_`` order."""
        self._check_fitted()
        probs = self.classifier_.predict_proba(_texts(X))
        decisions = self.classifier_.decide(probs)
        if not self.multi_label_:
            return self._classes_by_id[decisions]
        chosen = decisions[:, self._columns]  # (n_texts, n_classes), classes_ order
        return [self.classes_[row].tolist() for row in chosen]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on ``X`` and ``y`` (multi-label: subset accuracy, the share of texts whose label set is exact)."""
        if not (self.__sklearn_is_fitted__() and self.multi_label_):
            return super().score(X, y, sample_weight=sample_weight)
        exact = [set(map(str, p)) == set(map(str, t)) for p, t in zip(self.predict(X), _labels(y, len(X)))]
        return float(np.average(exact, weights=sample_weight))

    # -- persistence ---------------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the fitted model directory (see :meth:`bertfit.TextClassifier.save_pretrained`).

        Raises:
            NotFittedError: Nothing to save yet.
            OutputExistsError: ``path`` holds files and ``overwrite`` is False.
        """
        self._check_fitted()
        return self.classifier_.save_pretrained(path, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path: str | Path, **options: Any) -> BertfitClassifier:
        """A fitted estimator of a saved model directory; its parameters are the training run's options.

        ``classes_`` are the saved label names, as integers when they all are (a model trained on ``[0, 1]``
        predicts ``0`` and ``1`` again). ``options`` go to :meth:`bertfit.TextClassifier.from_pretrained`.

        Raises:
            ModelError: ``path`` is not a loadable model directory.
        """
        classifier = TextClassifier.from_pretrained(path, **options)
        saved = classifier.card.training.config if classifier.card.training else {}
        names = set(cls._get_param_names()) - {"config"}
        estimator = cls(**{k: v for k, v in saved.items() if k in names})
        if estimator.model_name_or_path is None:
            estimator.model_name_or_path = classifier.card.base_model
        labels = classifier.labels
        values = [int(name) for name in labels] if all(_is_int(name) for name in labels) else list(labels)
        estimator._set_fitted(classifier, values)
        return estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True  # X is a 1-D sequence of texts
        tags.non_deterministic = True  # bf16 training and thread scheduling change the last digits
        return tags


def _texts(X) -> list[str]:
    if getattr(X, "ndim", 1) != 1:
        raise DataError(
            f"X must be a 1-D sequence of texts, got an array of shape {X.shape}; pass one column, e.g. df['text']"
        )
    if isinstance(X, str):
        raise DataError("X must be a sequence of texts, got one string; pass [text]")
    texts = list(X)
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise DataError(f"X must hold texts (strings); item {bad} is {texts[bad]!r}; drop or fill missing texts")
    return [str(text) for text in texts]  # numpy's str_ and pandas' strings as plain str


def _labels(y, n_texts: int) -> list[Any]:
    if getattr(y, "ndim", 1) != 1:
        raise DataError(
            f"y must hold one label or one list of labels per text, got an array of shape {y.shape}; for a "
            "multi-label indicator matrix pass MultiLabelBinarizer().inverse_transform(y) (label lists) instead"
        )
    labels = list(y)
    if len(labels) != n_texts:
        raise DataError(f"got {n_texts} texts but {len(labels)} labels; pass one label per text")
    return labels


def _is_multi_label(labels: Sequence[Any]) -> bool:
    return any(isinstance(label, (list, tuple, set, frozenset, np.ndarray)) for label in labels)


def _label_values(labels: Sequence[Any], multi_label: bool) -> list[Any]:
    # The distinct labels as given (each label of every set, for multi-label data).
    values = [value for row in labels for value in row] if multi_label else list(labels)
    return list({str(value): value for value in values}.values())


def _is_int(name: str) -> bool:
    return name.lstrip("+-").isdigit()
