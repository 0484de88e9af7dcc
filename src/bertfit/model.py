"""TextClassifier: a fine-tuned encoder with its tokenizer and model card; fit, load, save and predict. And
:func:`load_classifier`, the one loader of every kind of model directory.

A single-label model turns its logits into probabilities with a softmax and predicts one label per text; a
multi-label model (``"multi_label": true`` in ``bertfit.json``, ``problem_type="multi_label_classification"`` in
``config.json``) uses a sigmoid per label and predicts the set of labels whose probability reaches that label's
threshold (see :mod:`bertfit.decision`).

A saved model directory is a standard Hugging Face one (``model.safetensors``, ``config.json`` with ``id2label``,
tokenizer files) that ``transformers.pipeline("text-classification", model=DIR)`` loads, plus the files of
:mod:`bertfit.card` (``bertfit.json``, ``metrics.json``, ``validation_predictions.jsonl``, ``report.html``).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backbone import MULTI_LABEL_PROBLEM, load_sequence_classifier, load_tokenizer, model_max_length
from .card import ModelCard, read_model_files
from .decision import DecisionRule
from .exceptions import ConfigError, DataError, ModelError, NotFittedError
from .features import Windowing
from .hardware import default_device, resolve_precision
from .inference import torch_logits
from .lexical import LexicalHead, load_lexical
from .predictor import Predictor

__all__ = ["TextClassifier", "load_classifier"]

_LOADING = threading.Lock()  # one transformers load at a time (a server's threads may ask for it together)


class TextClassifier(Predictor):
    """A text classifier over a BERT-family encoder.

    ``__init__`` only stores options; the model comes from :meth:`fit` or :meth:`from_pretrained`.

    Args:
        model_name_or_path: Encoder to fine-tune in :meth:`fit` (local directory or hub id); None takes the
            embedded default model.
        config: Training options for :meth:`fit`; its ``model_name_or_path`` is replaced by the argument above.
        batch_size: Texts per prediction batch.
        device: ``"cpu"``, ``"cuda"``, ... ; default: CUDA when available, else CPU.
        precision: Prediction arithmetic: ``fp32`` (exact), ``bf16``/``fp16`` autocast, or ``auto`` (bf16 on CPUs
            with AVX512-BF16/AMX and on bf16 GPUs: several times the throughput of fp32; probabilities differ by
            about 1e-2, so a text on the decision boundary can change label).

    >>> clf = TextClassifier().fit(["great", "awful", "superb", "bad"], ["pos", "neg", "pos", "neg"])  # doctest: +SKIP
    >>> clf.predict("what a great film")  # doctest: +SKIP
    'pos'
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        config: Any = None,
        batch_size: int = 128,
        device: str | None = None,
        precision: str = "fp32",
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.config = config
        self.batch_size = batch_size
        self.device = device
        self.precision = precision

    # -- learned state -------------------------------------------------------------------------------------------

    @classmethod
    def _from_trained(
        cls,
        model,
        tokenizer,
        card: ModelCard,
        metrics: dict[str, Any] | None = None,
        records: list[dict[str, Any]] | None = None,
        lexical: LexicalHead | None = None,
        source: tuple | None = None,
        **options: Any,
    ) -> TextClassifier:
        clf = cls(card.base_model, **options)
        clf._set_state(model, tokenizer, card, metrics, records, lexical, source)
        return clf

    def _set_state(self, model, tokenizer, card: ModelCard, metrics, records, lexical=None, source=None) -> None:
        self.precision_ = resolve_precision(self.precision, self.device or default_device())  # once, at load
        if model is not None:
            from .native import BertClassifier

            if isinstance(model, BertClassifier):  # trained natively: it predicts so, with no directory yet
                model, tokenizer, source = None, None, (model, tokenizer, None)
        self._model = None if model is None else model.eval().to(self.precision_.device)
        self._tokenizer = tokenizer
        # (model, tokenizer, directory) of bertfit.native: what predicts until the transformers model is asked for.
        self._native = None if source is None else (source[0].eval().to(self.precision_.device), *source[1:])
        self.card_ = card
        self.metrics_ = metrics
        self.validation_predictions_ = records  # kept so that save_pretrained writes the report again
        self.lexical_ = lexical

    @property
    def model_(self):
        """The fine-tuned transformers model; for a directory that prediction reads without transformers (see
        :mod:`bertfit.native`), loaded on first use."""
        self._load_transformers()
        return self._model

    @property
    def tokenizer_(self):
        """The model's transformers tokenizer, loaded on first use as :attr:`model_` is."""
        self._load_transformers()
        return self._tokenizer

    def _load_transformers(self) -> None:
        self._check_fitted()
        with _LOADING:
            if self._model is None:
                model, tokenizer, path = self._native
                with contextlib.ExitStack() as stack:
                    if path is None:  # a model trained natively and not saved: through a temporary directory
                        path = stack.enter_context(tempfile.TemporaryDirectory(prefix="bertfit-"))
                        model.save_pretrained(path)
                        tokenizer.save_pretrained(path)
                    self._model = load_sequence_classifier(path).eval().to(self.precision_.device)
                    self._tokenizer = load_tokenizer(path)
                self._native = None  # one engine from here on (their outputs are the same)

    def _check_fitted(self) -> None:
        if "card_" not in self.__dict__:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments or "
                "load a trained model with 'TextClassifier.from_pretrained' before using this method."
            )

    # -- training ------------------------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[Any],
        *,
        validation: tuple[Sequence[str], Sequence[Any]] | None = None,
    ) -> TextClassifier:
        """Fine-tune the encoder on ``texts`` and ``labels``, as :func:`bertfit.train` does (nothing is saved).

        Args:
            texts: Training texts.
            labels: One label (string or integer) per text, or one list of labels per text for a multi-label model
                (see also ``config.label_sep``).
            validation: ``(texts, labels)`` to select the best epoch on; default: a stratified share of the
                training data (``config.val_size``).

        Returns:
            self, fitted.

        Raises:
            DataError: Unusable texts or labels.
            ConfigError: Invalid options.
            TrainingError: The loss became NaN or infinite (the best state before it is kept, if any).
        """
        from .config import TrainConfig
        from .data import TextDataset
        from .pipeline import fit

        if isinstance(self.model_name_or_path, TrainConfig):
            raise ConfigError(
                "TextClassifier's first argument is the model to fine-tune; pass the TrainConfig as a keyword: "
                "TextClassifier(config=TrainConfig(...))"
            )
        if isinstance(texts, str):
            raise DataError("texts must be a sequence of strings, got one string; pass [text]")
        if validation is not None and (isinstance(validation, str) or len(validation) != 2):
            raise ConfigError("validation must be a (texts, labels) pair")
        config = self.config or TrainConfig()
        if self.model_name_or_path is not None:
            config = TrainConfig.from_dict({**config.to_dict(), "model_name_or_path": self.model_name_or_path})
        train_data = TextDataset(list(texts), list(labels))
        val_data = None if validation is None else TextDataset(list(validation[0]), list(validation[1]))
        fitted = fit(config, train_data, val_data)
        self._set_state(fitted.model, fitted.tokenizer, fitted.card, fitted.metrics, fitted.records, fitted.lexical)
        fitted.raise_if_diverged(saved_to=None)
        return self

    # -- prediction ----------------------------------------------------------------------------------------------

    def _logits(self, texts: list[str]) -> np.ndarray:
        native = self._native  # read once: a server thread may be loading transformers' model meanwhile
        model, tokenizer = (self._model, self._tokenizer) if native is None else native[:2]
        return torch_logits(model, tokenizer, texts, self.windowing, self.precision_, self.batch_size)

    def with_precision(self, precision: str) -> TextClassifier:
        """A classifier sharing these weights that predicts in ``precision`` (see :class:`TextClassifier`)."""
        self._check_fitted()
        other = copy.copy(self)
        other.precision = precision
        other.precision_ = resolve_precision(precision, self.precision_.device)
        return other

    # -- persistence ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        batch_size: int = 128,
        device: str | None = None,
        precision: str = "fp32",
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> TextClassifier:
        """Load a model directory written by :meth:`save_pretrained` (or any sequence-classification model).

        ``batch_size``, ``device`` and ``precision`` are as in :class:`TextClassifier`. Only safetensors weights
        load unless ``allow_pickle`` (a pickle-based ``pytorch_model.bin`` can run code when it is read).

        Raises:
            ModelError: The directory is missing or is not a loadable model.
        """
        path = Path(path)
        if not path.is_dir():
            raise ModelError(f"model directory {path} does not exist; pass the --output-dir of a training run")
        files = read_model_files(path)
        options = {"batch_size": batch_size, "device": device, "precision": precision}
        from .native import load_native

        native = load_native(path) if files.card is not None and not trust_remote_code else None
        if native is not None:  # a BERT that bertfit trained: predicts without importing transformers
            model = tokenizer = None
        else:
            model, loading = load_sequence_classifier(
                str(path), trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, output_loading_info=True
            )
            _refuse_random_weights(path, loading["missing_keys"])
            tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
        card = files.card or _card_of_plain_model(model, tokenizer, path)
        lexical = load_lexical(path, card.labels)
        source = None if native is None else (*native, str(path))
        return cls._from_trained(model, tokenizer, card, files.metrics, files.records, lexical, source, **options)

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model directory atomically: all files appear at once, or none (see :mod:`bertfit.save`).

        Args:
            path: Target directory.
            overwrite: Replace an existing non-empty directory.

        Returns:
            The directory written.

        Raises:
            OutputExistsError: ``path`` holds files and ``overwrite`` is False.
            NotFittedError: Nothing to save yet.
        """
        from .save import save_model

        self._check_fitted()
        native = self._native  # read once (see _logits); bertfit.native writes the files transformers would
        model, tokenizer = native[:2] if native is not None else (self.model_, self.tokenizer_)
        parts = (model, tokenizer, self.card_, self.metrics_, self.validation_predictions_)
        return save_model(path, *parts, lexical=self.lexical_, overwrite=overwrite)


def _refuse_random_weights(path: Path, missing: set[str]) -> None:
    # transformers initializes the weights a checkpoint lacks at random and only logs it: a base model's head, so
    # every prediction would be noise that changes from one load to the next.
    if missing:
        names = sorted(missing)
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise ModelError(
            f"{path} is not a trained classifier: its weights lack {len(names)} tensor(s) of the classification "
            f"model ({shown}), which would be drawn at random; a base model is fine-tuned first (bertfit train "
            f"--model {path} --data FILE), and predict, evaluate and serve take the --output-dir of that run"
        )


def _card_of_plain_model(model, tokenizer, path: Path) -> ModelCard:
    # A Hugging Face classifier that bertfit did not train: its labels from config.json, argmax, truncation.
    id2label = model.config.id2label
    labels = tuple(str(id2label[i]) for i in range(len(id2label)))
    decision = DecisionRule(labels, multi_label=model.config.problem_type == MULTI_LABEL_PROBLEM)
    return ModelCard(decision, Windowing(model_max_length(tokenizer, model.config)), base_model=str(path))


def load_classifier(
    path: str | Path,
    *,
    batch_size: int = 128,
    precision: str = "fp32",
    device: str | None = None,
    allow_pickle: bool = False,
) -> Predictor:
    """The predictor of any model directory: an :class:`~bertfit.onnx_model.OnnxClassifier` for an ONNX export
    (``model.onnx``; it runs in the arithmetic it was exported with), else a :class:`TextClassifier` predicting in
    ``precision``.

    Raises:
        ModelError: ``path`` is neither a loadable model directory nor an ONNX export.
        MissingDependencyError: ``path`` is an ONNX export and onnxruntime is not installed.
    """
    from .onnx_model import ONNX_FILE, OnnxClassifier

    if (Path(path) / ONNX_FILE).is_file():
        return OnnxClassifier.from_pretrained(path, batch_size=batch_size)
    options = {"batch_size": batch_size, "precision": precision, "device": device, "allow_pickle": allow_pickle}
    return TextClassifier.from_pretrained(path, **options)
