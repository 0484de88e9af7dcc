"""ONNX export of a trained model directory, with optional dynamic int8 quantization, re-evaluated after writing.

An export directory holds ``model.onnx`` (inputs ``input_ids``, ``attention_mask`` and ``token_type_ids`` when the
model takes them, dynamic batch and sequence axes; output ``logits``), the tokenizer files, the model's
``config.json`` (labels and architecture, which optimum's ``ORTModelForSequenceClassification`` and so a
``transformers.pipeline`` over it need), ``bertfit.json`` (the card, with an ``export`` entry), ``metrics.json`` and
the Hub model card ``README.md``.
:func:`bertfit.model.load_classifier` opens it as an :class:`~bertfit.onnx_model.OnnxClassifier`, which predicts
like a :class:`~bertfit.model.TextClassifier`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .backbone import quiet_transformers
from .card import write_model_files
from .exceptions import ConfigError, MissingDependencyError
from .features import INPUT_KEYS
from .files import atomic_directory
from .hub import write_readme
from .model import TextClassifier
from .onnx_model import ONNX_FILE, OnnxClassifier, onnxruntime_module

__all__ = ["export_onnx", "default_export_dir", "QUANTIZE_MODES"]

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
OPSET = 17  # LayerNormalization is one fused op from opset 17 on


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
        and ``max_abs_prob_diff`` (multi-label models: accuracy and agreement compare whole label sets), and
        ``pytorch_auto_precision`` / ``pytorch_auto_label_agreement``: PyTorch in the precision ``bertfit predict``
        uses by default, against PyTorch fp32.

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
    onnxruntime_module()
    try:
        import onnx  # noqa: F401  (the exporter and the quantizer need it)
    except ImportError:
        raise MissingDependencyError.for_extra("ONNX export", "onnx", "onnx") from None
    model_dir = Path(model_dir)
    output_dir = Path(output_dir) if output_dir is not None else default_export_dir(model_dir, quantize)
    clf = TextClassifier.from_pretrained(model_dir, device="cpu")
    with atomic_directory(output_dir, overwrite, inputs=[model_dir]) as staging:
        _export_graph(clf, staging / ONNX_FILE)
        if quantize == "int8":
            _quantize_int8(staging / ONNX_FILE)
        with quiet_transformers():
            clf.tokenizer_.save_pretrained(staging)
            clf.model_.config.save_pretrained(staging)  # config.json: id2label, model_type, sizes
        card = replace(clf.card, export={"format": "onnx", "quantize": quantize, "opset": OPSET})
        write_model_files(staging, card, clf.metrics)
        if clf.lexical_ is not None:  # the ONNX graph is the encoder's; the lexical head travels beside it
            clf.lexical_.save(staging)
        write_readme(staging, card, clf.metrics, name=output_dir.absolute().name)  # the Hub model card, README.md
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
    names = [k for k in INPUT_KEYS if k in clf.tokenizer_.model_input_names and k in accepted]
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
    records = clf.validation_predictions_
    if records is None:
        logger.warning("%s has no validation predictions; the export is not re-evaluated", model_dir)
        return {"texts": 0}
    texts = [r["text"] for r in records]
    logger.info("re-evaluating on %d validation texts", len(texts))
    probs_pt, probs_onnx = clf.predict_proba(texts), exported.predict_proba(texts)  # (n_texts, n_labels)
    # Label names, or label sets as tuples (multi-label: the accuracy is subset accuracy).
    truth = _as_keys([r["true_labels"] if clf.multi_label else r["true_label"] for r in records])
    pred_pt = _as_keys(clf.decision.predict(probs_pt))
    pred_onnx = _as_keys(exported.decision.predict(probs_onnx))
    acc_pt, acc_onnx = float(np.mean(pred_pt == truth)), float(np.mean(pred_onnx == truth))
    # PyTorch in the precision bertfit predict and serve use by default (auto), against its fp32 decisions.
    fast = clf.with_precision("auto")
    pred_fast = _as_keys(fast.decision.predict(fast.predict_proba(texts)))
    return {
        "texts": len(texts),
        "accuracy_pytorch": acc_pt,
        "accuracy_onnx": acc_onnx,
        "accuracy_change": acc_onnx - acc_pt,
        "label_agreement": float(np.mean(pred_pt == pred_onnx)),
        "max_abs_prob_diff": float(np.abs(probs_pt - probs_onnx).max()),
        "pytorch_auto_precision": fast.precision_.name,
        "pytorch_auto_label_agreement": float(np.mean(pred_pt == pred_fast)),
    }


def _as_keys(predictions: list) -> np.ndarray:
    """A 1-d object array of label names or label-set tuples, for element-wise comparison."""
    keys = np.empty(len(predictions), dtype=object)
    for i, prediction in enumerate(predictions):
        keys[i] = prediction if isinstance(prediction, str) else tuple(prediction)
    return keys
