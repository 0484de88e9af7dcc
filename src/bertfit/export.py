"""ONNX export of a trained model directory, optional dynamic int8 quantization, and prediction with onnxruntime.

An export directory holds ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` when the
model takes them, dynamic batch and sequence axes; output ``logits``), the tokenizer files, ``bertfit.json`` (with an
``export`` entry) and ``metrics.json``. :func:`load_classifier` opens it as an :class:`OnnxClassifier`, which
predicts like a :class:`~bertfit.model.TextClassifier`, so ``bertfit predict`` and ``bertfit evaluate`` take either.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ConfigError, MissingDependencyError, ModelError
from .model import (
    BERTFIT_FILE,
    METRICS_FILE,
    TextClassifier,
    _LabelledPredictor,
    _write_json,
    atomic_directory,
    batched_logits,
    decision_names,
    load_tokenizer,
    quiet_transformers,
)

__all__ = ["export_onnx", "OnnxClassifier", "load_classifier", "ONNX_FILE", "QUANTIZE_MODES"]

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
QUANTIZE_MODES = ("int8",)
OPSET = 17  # LayerNormalization is one fused op from opset 17 on
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError.for_extra("ONNX export and prediction", "onnx", "onnxruntime") from None
    return onnxruntime


def default_export_dir(model_dir: str | Path, quantize: str | None = None) -> Path:
    """``<model_dir>-onnx`` or ``<model_dir>-onnx-int8``: beside the model, which stays as it was."""
    model_dir = Path(model_dir)
    suffix = "-onnx" if quantize is None else f"-onnx-{quantize}"
    return model_dir.parent / f"{model_dir.name}{suffix}"


def export_onnx(
    model_dir: str | Path,
    output_dir: str | Path | None = None,
    *,
    quantize: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a trained model directory to ONNX, optionally quantize it to int8, and re-evaluate it.

    The export is written atomically. Re-evaluation runs the PyTorch model and the export on the validation texts
    saved with the model (``validation_predictions.jsonl``) and compares them.

    Args:
        model_dir: A model directory written by ``bertfit train``.
        output_dir: Where the export goes; default: ``<model_dir>-onnx`` (``<model_dir>-onnx-int8`` with
            ``quantize="int8"``), so the trained model directory is left untouched.
        quantize: None (fp32) or ``"int8"``: dynamic quantization, int8 weights of the matrix multiplications and
            embeddings, activations quantized on the fly.
        overwrite: Replace an existing non-empty ``output_dir``.

    Returns:
        ``output_dir``, ``quantize``, ``onnx_bytes``, ``texts`` (how many were re-evaluated) and, when the model has
        saved validation texts, ``accuracy_pytorch``, ``accuracy_onnx``, ``accuracy_change``, ``label_agreement``
        and ``max_abs_prob_diff`` (multi-label models: accuracy and agreement compare whole label sets).

    Raises:
        ConfigError: ``quantize`` is not None or "int8".
        ModelError: ``model_dir`` cannot be loaded.
        OutputExistsError: ``output_dir`` holds files and ``overwrite`` is False.
        MissingDependencyError: onnx or onnxruntime is not installed.

    >>> export_onnx("runs/spam", quantize="int8")["accuracy_change"]  # doctest: +SKIP
    -0.0009
    """
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ConfigError(f"unknown quantization {quantize!r}; expected one of {sorted(QUANTIZE_MODES)} or none")
    _onnxruntime()
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)
    except ImportError:
        raise MissingDependencyError.for_extra("ONNX export", "onnx", "onnx") from None
    model_dir = Path(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else default_export_dir(model_dir, quantize)
    clf = TextClassifier.from_pretrained(model_dir, device="cpu")
    with atomic_directory(output_dir, overwrite) as staging:
        _export_graph(clf, staging / ONNX_FILE)
        if quantize == "int8":
            _quantize_int8(staging / ONNX_FILE)
        with quiet_transformers():
            clf.tokenizer_.save_pretrained(staging)
        _write_json(
            staging / BERTFIT_FILE, {**clf.info_, "export": {"format": "onnx", "quantize": quantize, "opset": OPSET}}
        )
        if (model_dir / METRICS_FILE).is_file():
            shutil.copy2(model_dir / METRICS_FILE, staging / METRICS_FILE)
        result = {
            "output_dir": str(output_dir),
            "quantize": quantize,
            "onnx_bytes": (staging / ONNX_FILE).stat().st_size,
        }
        result.update(_compare(clf, OnnxClassifier.from_pretrained(staging), model_dir))
    logger.info("exported %s to %s", model_dir, output_dir)
    return result


def _export_graph(clf: TextClassifier, path: Path) -> None:
    import inspect
    import warnings

    import torch

    model = clf.model_.to("cpu").eval()
    accepted = inspect.signature(model.forward).parameters
    names = [k for k in _INPUT_NAMES if k in clf.tokenizer_.model_input_names and k in accepted]
    # A padded batch of two, so that tracing sees a real attention mask and no shape is baked in as a constant.
    sample = clf.tokenizer_(["an example text to trace the model with", "short"], padding=True, return_tensors="pt")
    wrapper = _logits_only(model, names).eval()  # eval: the exporter restores the wrapper's mode on the model after
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes, not actionable here
        torch.onnx.export(
            wrapper,
            tuple(sample[name] for name in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _logits_only(model, names: list[str]):
    """``model`` called with positional inputs ``names``, returning only the logits (batch, n_labels)."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    return LogitsOnly()


def _quantize_int8(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("model-fp32.onnx")
    path.rename(fp32)
    # onnxruntime logs an advisory on the root logger ("consider pre-processing"); the export works without it.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    fp32.unlink()


def _compare(clf: TextClassifier, exported: OnnxClassifier, model_dir: Path) -> dict[str, Any]:
    from .report import PREDICTIONS_FILE, read_records

    if not (model_dir / PREDICTIONS_FILE).is_file():
        logger.warning("%s has no %s; the export is not re-evaluated", model_dir, PREDICTIONS_FILE)
        return {"texts": 0}
    records = read_records(model_dir / PREDICTIONS_FILE)
    texts = [r["text"] for r in records]
    logger.info("re-evaluating on %d validation texts", len(texts))
    probs_pt, probs_onnx = clf.predict_proba(texts), exported.predict_proba(texts)  # (n_texts, n_labels)
    # Label names, or label sets as tuples (multi-label: the accuracy is subset accuracy).
    truth = _as_keys([r["true_labels"] if clf.multi_label else r["true_label"] for r in records])
    pred_pt = _as_keys(decision_names(clf.decide(probs_pt), clf.labels))
    pred_onnx = _as_keys(decision_names(exported.decide(probs_onnx), clf.labels))
    acc_pt, acc_onnx = float(np.mean(pred_pt == truth)), float(np.mean(pred_onnx == truth))
    return {
        "texts": len(texts),
        "accuracy_pytorch": acc_pt,
        "accuracy_onnx": acc_onnx,
        "accuracy_change": acc_onnx - acc_pt,
        "label_agreement": float(np.mean(pred_pt == pred_onnx)),
        "max_abs_prob_diff": float(np.abs(probs_pt - probs_onnx).max()),
    }


def _as_keys(predictions: list) -> np.ndarray:
    """A 1-d object array of label names or label-set tuples, for element-wise comparison."""
    keys = np.empty(len(predictions), dtype=object)
    for i, prediction in enumerate(predictions):
        keys[i] = prediction if isinstance(prediction, str) else tuple(prediction)
    return keys


class OnnxClassifier(_LabelledPredictor):
    """A model exported by :func:`export_onnx`, predicting with onnxruntime like a TextClassifier.

    Args:
        onnx_path: The ``model.onnx`` file.
        tokenizer: The model's tokenizer.
        info: The contents of ``bertfit.json``.
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
        info: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        batch_size: int = 128,
        threads: int | None = None,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.tokenizer_ = tokenizer
        self.info_ = info
        self.metrics_ = metrics
        self.batch_size = batch_size
        self.threads = threads
        self._start_session()

    def _start_session(self) -> None:
        ort = _onnxruntime()
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
        """Load an export directory written by :func:`export_onnx`.

        Args:
            path: The export directory.
            batch_size: Texts per prediction batch.
            threads: onnxruntime intra-op threads; default: onnxruntime's choice (one per physical core).

        Raises:
            ModelError: The directory holds no ``model.onnx`` or ``bertfit.json``, or they cannot be loaded.
            MissingDependencyError: onnxruntime is not installed.
        """
        _onnxruntime()
        path = Path(path)
        if not (path / ONNX_FILE).is_file() or not (path / BERTFIT_FILE).is_file():
            raise ModelError(
                f"{path} is not an ONNX export (expected {ONNX_FILE} and {BERTFIT_FILE}); run 'bertfit export'"
            )
        info = json.loads((path / BERTFIT_FILE).read_text(encoding="utf-8"))
        metrics_file = path / METRICS_FILE
        metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else None
        return cls(path / ONNX_FILE, load_tokenizer(str(path)), info, metrics, batch_size=batch_size, threads=threads)

    def predict_proba(self, texts: str | Sequence[str]) -> np.ndarray:
        """Class probabilities in :attr:`labels` order (sigmoids for a multi-label model): ``(n_texts, n_labels)``, or
        ``(n_labels,)`` for a string."""
        logits = batched_logits(
            self.tokenizer_,
            [texts] if isinstance(texts, str) else list(texts),
            self._forward,
            self.windowing,
            len(self.labels),
            self.batch_size,
            tensors="np",
        )
        probs = self._probabilities(logits)
        return probs[0] if isinstance(texts, str) else probs

    def _forward(self, batch) -> np.ndarray:
        feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self._input_names}
        return self.session_.run(["logits"], feed)[0]  # (batch, n_labels)


def load_classifier(
    path: str | Path, *, batch_size: int = 128, precision: str = "fp32"
) -> TextClassifier | OnnxClassifier:
    """An :class:`OnnxClassifier` when ``path`` holds ``model.onnx``, else ``TextClassifier.from_pretrained(path)``
    predicting in ``precision`` (an export runs in the arithmetic it was exported with).

    Raises:
        ModelError: ``path`` is neither a loadable model directory nor an ONNX export.
        MissingDependencyError: ``path`` is an ONNX export and onnxruntime is not installed.
    """
    if (Path(path) / ONNX_FILE).is_file():
        return OnnxClassifier.from_pretrained(path, batch_size=batch_size)
    return TextClassifier.from_pretrained(path, batch_size=batch_size, precision=precision)
