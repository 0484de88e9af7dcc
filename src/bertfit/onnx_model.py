"""Prediction from an ONNX export with onnxruntime: :class:`OnnxClassifier` predicts like a
:class:`~bertfit.model.TextClassifier` (same card, feature path and decision rule), so ``bertfit predict``,
``evaluate`` and ``serve`` take an export wherever they take a model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .backbone import load_tokenizer
from .card import CARD_FILE, ModelCard, read_model_files
from .exceptions import MissingDependencyError, ModelError
from .fast_tokenizer import load_fast_tokenizer
from .features import predict_texts
from .lexical import load_lexical
from .predictor import Predictor

__all__ = ["OnnxClassifier", "ONNX_FILE", "onnxruntime_module"]

ONNX_FILE = "model.onnx"


def onnxruntime_module():
    """The onnxruntime module, or the MissingDependencyError with the install line."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError.for_extra("ONNX export and prediction", "onnx", "onnxruntime") from None
    return onnxruntime


class OnnxClassifier(Predictor):
    """A model exported by :func:`bertfit.export.export_onnx`, predicting with onnxruntime like a TextClassifier.

    Args:
        onnx_path: The ``model.onnx`` file.
        tokenizer: The model's tokenizer (for BERT, a :class:`~bertfit.fast_tokenizer.FastTokenizer`).
        card: The model card (``bertfit.json``).
        metrics: The validation metrics saved with the model, if any.
        batch_size: Texts per prediction batch.
        threads: onnxruntime intra-op threads; default: onnxruntime's choice (one per physical core).

    >>> clf = OnnxClassifier.from_pretrained("runs/spam-onnx-int8")  # doctest: +SKIP
    >>> clf.predict("free prize, call now")  # doctest: +SKIP
    'spam'
    """

    def __init__(
        self,
        onnx_path: str | Path,
        tokenizer,
        card: ModelCard,
        metrics: dict[str, Any] | None = None,
        batch_size: int = 128,
        threads: int | None = None,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.tokenizer_ = tokenizer
        self.card_ = card
        self.metrics_ = metrics
        self.batch_size = batch_size
        self.threads = threads
        self._start_session()

    def _start_session(self) -> None:
        ort = onnxruntime_module()
        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
        try:
            self.session_ = ort.InferenceSession(str(self.onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors for missing or corrupt files
            raise ModelError(f"could not load {self.onnx_path}: {str(err).strip().splitlines()[0]}") from None
        self._input_names = [i.name for i in self.session_.get_inputs()]

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` onnxruntime intra-op threads from now on (a worker process's share of the CPU)."""
        self.threads = threads
        self._start_session()

    def __getstate__(self) -> dict[str, Any]:
        # An InferenceSession does not pickle; predict_file's worker processes open the file again.
        return {k: v for k, v in self.__dict__.items() if k != "session_"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_session()

    @classmethod
    def from_pretrained(cls, path: str | Path, *, batch_size: int = 128, threads: int | None = None) -> OnnxClassifier:
        """Load an export directory written by :func:`bertfit.export.export_onnx`.

        Args:
            path: The export directory.
            batch_size: Texts per prediction batch.
            threads: onnxruntime intra-op threads; default: onnxruntime's choice (one per physical core).

        Raises:
            ModelError: The directory holds no ``model.onnx`` or ``bertfit.json``, or they cannot be loaded.
            MissingDependencyError: onnxruntime is not installed.
        """
        onnxruntime_module()
        path = Path(path)
        files = read_model_files(path) if path.is_dir() else None
        if not (path / ONNX_FILE).is_file() or files is None or files.card is None:
            raise ModelError(
                f"{path} is not an ONNX export (expected {ONNX_FILE} and {CARD_FILE}); run 'bertfit export'"
            )
        # A BERT tokenizer without transformers' import (about 1 s, a good share of a short prediction's time).
        tokenizer = load_fast_tokenizer(path) or load_tokenizer(str(path))
        clf = cls(path / ONNX_FILE, tokenizer, files.card, files.metrics, batch_size=batch_size, threads=threads)
        clf.lexical_ = load_lexical(path, files.card.labels)  # the lexical head of the model exported, if it has one
        return clf

    def _logits(self, texts: list[str]) -> np.ndarray:
        width = len(self.labels)
        return predict_texts(
            self.tokenizer_, texts, self._forward, self.windowing, width, self.batch_size, tensors="np"
        )

    def _forward(self, batch) -> np.ndarray:
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self._input_names}
        return self.session_.run(["logits"], feed)[0]  # (batch, n_labels)
