"""The Hugging Face Hub: the model card ``README.md`` of every model directory, and uploading a model directory.

``README.md`` is a Hub model card. Its YAML front matter is rendered and checked by huggingface_hub's
``ModelCardData`` (``library_name``, ``base_model``, ``pipeline_tag``, ``tags``, ``metrics`` and a ``model-index`` of
the validation results); its Markdown body is written from the bertfit :class:`~bertfit.card.ModelCard` and the
metrics: what the model is, its labels and decision rule, how to use it (``bertfit predict`` and a plain transformers
pipeline), the training options, the data, the validation metrics beside the baselines, and the warnings. The save
stage (:mod:`bertfit.save`) and the ONNX export (:mod:`bertfit.export`) write it inside their atomic directory
write; :func:`push_to_hub` uploads a model directory (``bertfit train --push-to-hub``, ``bertfit push``).

What the front matter says, and why:

- ``base_model``: a Hub id only, since the Hub links it to a model page. The embedded default model's local
  directory is given as its hub id, sentence-transformers/all-MiniLM-L6-v2; another local directory is left out (the
  body names it).
- ``datasets``: left out. bertfit trains on local files, and the Hub reads each entry as the id of a dataset on
  hf.co/datasets. The ``model-index`` names the validation data by its file name (the schema requires a dataset
  ``name`` and ``type``), and the body gives each split's size, fingerprint and label counts.
- ``library_name``: transformers; ``onnx`` (and the tag ``onnx``) for an ONNX export, which transformers cannot
  load by itself.
"""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

from ._version import __version__
from .backbone import DEFAULT_MODEL_NAME, default_model_path
from .card import CARD_FILE, PREDICTIONS_FILE, REPORT_FILE, DataSummary, ModelCard, read_model_files
from .exceptions import ConfigError, HubError, ModelError, error_summary
from .files import atomic_file

__all__ = ["README_FILE", "model_card", "write_readme", "hub_base_model", "check_push", "push_to_hub"]

logger = logging.getLogger(__name__)

README_FILE = "README.md"
TASK = "text-classification"
# Never uploaded: hidden entries, i.e. the staging copies of bertfit's atomic writes (".<name>.tmp-<pid>-..."), and
# editor or system files (.DS_Store, .ipynb_checkpoints/). Checkpoints and the tokenization cache live outside the
# model directory (.<name>.checkpoint/ beside it, ~/.cache/bertfit), so they are never in it.
IGNORED = [".*", "*/.*"]
# Options of the run that describe this machine or this invocation, not the model: left out of the card's table.
_LOCAL_OPTIONS = frozenset(
    {"model_name_or_path", "output_dir", "overwrite", "resume", "cache_dir", "track", "tracking_uri"}
    | {"push_to_hub", "hub_private", "allow_pickle"}
)
# metrics.json key -> (Hub metric id, display name, metric args) of the model-index; binary and multi-label tasks add
# theirs in _hub_metrics.
_METRICS = {
    "accuracy": ("accuracy", "Accuracy", None),
    "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    "micro_f1": ("f1", "Micro F1", {"average": "micro"}),
    "weighted_f1": ("f1", "Weighted F1", {"average": "weighted"}),
    "mcc": ("matthews_correlation", "MCC", None),
}
_MULTI_LABEL_METRICS = {
    "subset_accuracy": ("accuracy", "Subset accuracy", None),
    "micro_f1": ("f1", "Micro F1", {"average": "micro"}),
    "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    "weighted_f1": ("f1", "Weighted F1", {"average": "weighted"}),
    "samples_f1": ("f1", "Samples F1", {"average": "samples"}),
    "micro_precision": ("precision", "Micro precision", {"average": "micro"}),
    "micro_recall": ("recall", "Micro recall", {"average": "micro"}),
    "hamming_loss": ("hamming_loss", "Hamming loss", None),
}


def model_card(card: ModelCard, metrics: dict[str, Any] | None, name: str):
    """The Hub model card (a ``huggingface_hub.ModelCard``) of a model directory named ``name``.

    Args:
        card: The model's bertfit card (``bertfit.json``).
        metrics: Its validation metrics (``metrics.json``); None for a model without them (no ``model-index``).
        name: The model's name: the directory's name, the ``model-index`` name and the card's title.

    >>> str(model_card(card, metrics, "spam")).startswith("---")  # doctest: +SKIP
    True
    """
    from huggingface_hub import ModelCard as HubCard

    data = _card_data(card, metrics, name)
    # Parsed back through ModelCardData, which validates the model-index: a bad field fails here, not on the Hub.
    return HubCard(f"---\n{data.to_yaml()}\n---\n\n{_body(card, metrics, name)}")


def write_readme(directory: str | Path, card: ModelCard, metrics: dict[str, Any] | None, name: str) -> None:
    """Write ``README.md``, the model card of :func:`model_card`, into ``directory`` (a staging directory of
    :func:`bertfit.files.atomic_directory`, which makes it atomic)."""
    (Path(directory) / README_FILE).write_text(str(model_card(card, metrics, name)), encoding="utf-8")


def hub_base_model(base_model: str | None) -> str | None:
    """The Hub id of the model a model was fine-tuned from, for the card's ``base_model``: the id itself, the default
    model's hub id for its embedded local directory, and None for any other local directory.

    >>> hub_base_model("sentence-transformers/all-MiniLM-L6-v2")
    'sentence-transformers/all-MiniLM-L6-v2'
    """
    if not base_model:
        return None
    path = Path(base_model)
    if path.is_dir():
        return DEFAULT_MODEL_NAME if _is_default_model(path) else None
    return base_model if _is_repo_id(base_model) else None


def _is_default_model(path: Path) -> bool:
    try:
        return path.resolve() == default_model_path().resolve()
    except ModelError:  # the default model is not installed (or fails its checksum): the path is another model
        return False


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# -- front matter --------------------------------------------------------------------------------------------------


def _card_data(card: ModelCard, metrics: dict[str, Any] | None, name: str):
    from huggingface_hub import ModelCardData

    onnx = card.export is not None
    tags = ["bertfit", TASK, *(["multi-label"] if card.multi_label else []), *(["onnx"] if onnx else [])]
    results = _eval_results(card, metrics) if metrics else None
    return ModelCardData(
        library_name="onnx" if onnx else "transformers",
        base_model=hub_base_model(card.base_model),
        pipeline_tag=TASK,
        tags=tags,
        metrics=sorted({result.metric_type for result in results}) if results else None,
        model_name=name if results else None,  # the model-index's name; without results it would be a stray key
        eval_results=results or None,
    )


def _eval_results(card: ModelCard, metrics: dict[str, Any]) -> list:
    from huggingface_hub import EvalResult

    dataset = _file_name(card.training.validation_data if card.training else None)
    return [
        EvalResult(
            task_type=TASK,
            task_name="Text Classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_split="validation",
            metric_type=metric_type,
            metric_value=float(metrics[key]),
            metric_name=metric_name,
            metric_args=args,
        )
        for key, (metric_type, metric_name, args) in _hub_metrics(card, metrics).items()
        if key in metrics
    ]


def _hub_metrics(card: ModelCard, metrics: dict[str, Any]) -> dict[str, tuple[str, str, dict | None]]:
    """The metrics.json keys of the model-index, each with its Hub metric id, display name and args."""
    if card.multi_label:
        return _MULTI_LABEL_METRICS
    positive = metrics.get("positive_label")
    if positive is None:
        return _METRICS
    names = {"precision": "Precision", "recall": "Recall", "f1": "F1", "specificity": "Specificity"}
    scores = {key: (key, f"{name} ({positive})", {"pos_label": positive}) for key, name in names.items()}
    return {**_METRICS, **scores}


def _file_name(data: DataSummary | None) -> str:
    # Only the file's name: the rest of its path belongs to the machine it was trained on.
    if data is None or data.source.startswith("<"):
        return "in-memory texts"
    return Path(data.source).name


# -- body ----------------------------------------------------------------------------------------------------------


def _body(card: ModelCard, metrics: dict[str, Any] | None, name: str) -> str:
    sections = (
        _intro(card, name),
        _labels(card),
        _usage(card, name),
        _training(card),
        _data(card),
        _results(card, metrics),
        _warnings(card),
    )
    return "\n\n".join(section for section in sections if section) + "\n"


def _intro(card: ModelCard, name: str) -> str:
    labels = card.labels
    if card.multi_label:
        task = f"multi-label: any set of its {len(labels)} labels per text, possibly none"
    elif len(labels) == 2:
        task = "binary" + (f", positive class `{card.positive_label}`" if card.positive_label else "")
    else:
        task = f"one of {len(labels)} classes per text"
    lines = [f"# {name}", "", f"A text classifier ({task}) fine-tuned with bertfit from {_base(card.base_model)}."]
    if card.export is not None:
        quantized = ", weights quantized to int8" if card.export.get("quantize") == "int8" else ""
        lines.append(
            f"This directory is its ONNX export (`model.onnx`, opset {card.export.get('opset')}{quantized}) for "
            "onnxruntime; the metrics below are those of the PyTorch model it was exported from."
        )
    window = card.windowing
    if window.mode == "chunk":
        inputs = (
            f"a longer text is split into windows of {card.max_length} tokens overlapping by {window.stride}, and "
            f"its logits are the {window.aggregate} of its windows' logits"
        )
    else:
        inputs = f"a longer text keeps only its first {card.max_length} tokens"
    lines += ["", f"Inputs: up to {card.max_length} tokens per window, special tokens included; {inputs}."]
    if card.bertfit_version:
        lines[-1] += f" Written by bertfit {card.bertfit_version}."
    return "\n".join(lines)


def _base(base_model: str | None) -> str:
    hub_id = hub_base_model(base_model)
    if hub_id is not None:
        return f"[{hub_id}](https://huggingface.co/{hub_id})"
    return f"a local model directory (`{Path(base_model).name}`)" if base_model else "an encoder"


def _labels(card: ModelCard) -> str:
    decision = card.decision
    lines = ["## Labels", "", "| id | label | predicted when |", "| ---: | --- | --- |"]
    for i, label in enumerate(card.labels):
        lines.append(f"| {i} | {_cell(label)} | {_rule(card, label)} |")
    if decision.temperature != 1.0:
        lines += [
            "",
            f"Probabilities are the {'sigmoid' if card.multi_label else 'softmax'} of the logits divided by the "
            f"temperature {decision.temperature:.4g}, fitted on validation.",
        ]
    return "\n".join(lines)


def _rule(card: ModelCard, label: str) -> str:
    decision = card.decision
    if card.multi_label:
        tuned = " (tuned on validation)" if label in (decision.thresholds or {}) else ""
        return f"its probability is at least {decision.cuts()[card.labels.index(label)]:.4f}{tuned}"
    if _tuned_threshold(card):
        positive = _cell(decision.positive_label)
        sign = "at least" if label == decision.positive_label else "below"
        return f"P({positive}) is {sign} {decision.threshold:.4f} (tuned on validation)"
    return "it is the most probable label"


def _tuned_threshold(card: ModelCard) -> bool:
    # A binary threshold other than 0.5: at 0.5 it decides as the argmax does.
    return card.decision.kind == "binary threshold" and card.decision.threshold != 0.5


def _usage(card: ModelCard, name: str) -> str:
    # The repository it is pushed to, when the run named one (an export is a directory of its own).
    repo = (card.training.config.get("push_to_hub") if card.training and card.export is None else None) or name
    lines = [
        "## How to use",
        "",
        f"With bertfit, on a local copy of this directory (`hf download {repo} --local-dir {name}` fetches it):",
        "",
        "```bash",
        f'bertfit predict {name} "an example text"',
        f"bertfit predict {name} --input texts.csv --output predictions.csv",
        f"bertfit serve {name}",
        "```",
        "",
    ]
    lines += _onnx_snippet(card, repo) if card.export is not None else _pipeline_snippet(card, repo)
    notes = _pipeline_notes(card)
    if notes:
        lines += ["", "The pipeline's answers differ from `bertfit predict`:", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines)


def _pipeline_snippet(card: ModelCard, repo: str) -> list[str]:
    every_label = ", top_k=None" if card.multi_label else ""
    return [
        "With plain transformers:",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'classifier = pipeline("text-classification", model="{repo}", truncation=True, max_length={card.max_length}'
        f"{every_label})",
        'print(classifier(["an example text"]))',
        "```",
    ]


def _onnx_snippet(card: ModelCard, repo: str) -> list[str]:
    return [
        "With onnxruntime through optimum (`pip install optimum[onnxruntime]`) and a transformers pipeline:",
        "",
        "```python",
        "from optimum.onnxruntime import ORTModelForSequenceClassification",
        "from transformers import AutoTokenizer, pipeline",
        "",
        f'model = ORTModelForSequenceClassification.from_pretrained("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        'classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, truncation=True, '
        f"max_length={card.max_length}{', top_k=None' if card.multi_label else ''})",
        'print(classifier(["an example text"]))',
        "```",
    ]


def _pipeline_notes(card: ModelCard) -> list[str]:
    decision, notes = card.decision, []
    if card.multi_label:
        notes.append(
            "it gives every label's probability (`top_k=None`); bertfit predicts the labels whose probability reaches "
            "their threshold in the table above"
        )
    elif _tuned_threshold(card):
        notes.append(
            f"it predicts the more probable class; bertfit predicts `{decision.positive_label}` when its probability "
            f"reaches the threshold {decision.threshold:.4f} tuned on validation"
        )
    if decision.temperature != 1.0:
        notes.append(
            f"its probabilities come from the raw logits; bertfit divides them by the temperature "
            f"{decision.temperature:.4g} first"
        )
    fusion = card.training.lexical if card.training else None
    if fusion is not None and fusion.kept:
        notes.append(
            "it gives the encoder's probabilities only; bertfit averages them with those of the lexical head saved "
            "beside the weights (`lexical.json`, `lexical.safetensors`: TF-IDF + logistic regression over every word)"
        )
    if card.windowing.mode == "chunk":
        notes.append(
            f"`truncation=True` keeps the first {card.max_length} tokens of a longer text; bertfit reads all of it, "
            "window by window"
        )
    return notes


def _training(card: ModelCard) -> str:
    record = card.training
    if record is None:
        return ""
    options = {key: value for key, value in record.config.items() if key not in _LOCAL_OPTIONS}
    lines = ["## Training", "", "| option | value |", "| --- | --- |"]
    lines += [f"| {key} | `{_cell(json.dumps(value, ensure_ascii=False))}` |" for key, value in options.items()]
    best = record.best
    ran = f"Trained on {record.device} in {record.precision}"
    if record.train_seconds is not None:
        ran += f" in {record.train_seconds:.0f} s"
    if best.epoch is not None and best.value is not None:
        ran += f"; the model is the state of its best evaluation: epoch {best.epoch:g}, {best.metric} {best.value:.4f}"
    return "\n".join([*lines, "", ran + "."])


def _data(card: ModelCard) -> str:
    record = card.training
    if record is None:
        return ""
    train, val = record.train_data, record.validation_data
    held_out = f"held out of `{_file_name(train)}` (stratified)" if val.origin == "split" else f"`{_file_name(val)}`"
    lines = ["## Data", "", "| split | source | texts | fingerprint |", "| --- | --- | ---: | --- |"]
    lines.append(f"| train | `{_file_name(train)}` | {train.rows:,} | `{train.fingerprint}` |")
    lines.append(f"| validation | {held_out} | {val.rows:,} | `{val.fingerprint}` |")
    counted = "texts carrying each label" if card.multi_label else "texts per label"
    lines += ["", f"{counted.capitalize()}:", "", "| label | train | validation |", "| --- | ---: | ---: |"]
    for label in card.labels:
        lines.append(f"| {_cell(label)} | {train.label_counts.get(label, 0):,} | {val.label_counts.get(label, 0):,} |")
    return "\n".join(lines)


def _results(card: ModelCard, metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    rows = card.training.validation_data.rows if card.training else None
    on = f"on the {rows:,} validation texts" if rows else "on the validation texts"
    lines = [
        "## Validation results",
        "",
        f"Measured {on}, which also picked the best evaluation and tuned the decision thresholds: expect slightly "
        "lower scores on new texts.",
        "",
        "| metric | value |",
        "| --- | ---: |",
    ]
    for key, (_, metric_name, _) in _hub_metrics(card, metrics).items():
        if key in metrics:
            lines.append(f"| {_cell(metric_name)} | {metrics[key]:.4f} |")
    if metrics.get("per_class"):
        lines += ["", "| label | precision | recall | F1 | support |", "| --- | ---: | ---: | ---: | ---: |"]
        for label, s in metrics["per_class"].items():
            lines.append(
                f"| {_cell(label)} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']:,} |"
            )
    baselines = _baselines(card, metrics)
    return "\n".join(lines + ([""] + baselines if baselines else []))


def _baselines(card: ModelCard, metrics: dict[str, Any]) -> list[str]:
    record = card.training
    if record is None or not record.baselines:
        return []
    if card.multi_label:
        columns = {"subset accuracy": "subset_accuracy", "micro-F1": "micro_f1", "macro-F1": "macro_f1"}
        columns["Hamming loss"] = "hamming_loss"
    else:
        columns = {"accuracy": "accuracy", "macro-F1": "macro_f1"}
        if "positive_label" in metrics:
            columns[f"F1 ({_cell(metrics['positive_label'])})"] = "f1"
    rows = {"fine-tuned (this model)": {"metrics": metrics, "seconds": record.train_seconds}, **record.baselines}
    lines = [
        "Beside baselines trained on the same training texts and scored on the same validation texts (seconds: "
        "training time):",
        "",
        "| model | " + " | ".join(columns) + " | seconds |",
        "| --- |" + " ---: |" * (len(columns) + 1),
    ]
    for model, result in rows.items():
        scores = [_number(result["metrics"].get(key)) for key in columns.values()]
        seconds = result.get("seconds")
        lines.append(f"| {_cell(model)} | " + " | ".join(scores) + f" | {_number(seconds, '.1f')} |")
    return lines


def _warnings(card: ModelCard) -> str:
    record = card.training
    warnings = [" ".join(str(warning).split()) for warning in (record.warnings if record else [])]
    if record is not None and card.export is None:
        warnings.append(
            f"`{PREDICTIONS_FILE}` and `{REPORT_FILE}` in this directory hold validation texts (the report shows the "
            "most confident mistakes): publish the directory only where those texts may be read."
        )
    if not warnings:
        return ""
    return "\n".join(["## Warnings", "", *(f"- {_cell(warning)}" for warning in warnings)])


def _cell(value: Any) -> str:
    # Inside a Markdown table a "|" would end the cell.
    return str(value).replace("|", "\\|")


def _number(value: Any, spec: str = ".4f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else ""


# -- pushing -------------------------------------------------------------------------------------------------------


def check_push(repo_id: str, output_dir: str | Path | None) -> None:
    """Refuse a ``push_to_hub`` that cannot work, before any training: no output directory, a malformed repository
    id, or no Hugging Face token (the network is not asked).

    Raises:
        ConfigError: One of those.
    """
    if not output_dir:
        raise ConfigError("push_to_hub uploads the saved model directory: set output_dir (--output-dir) too")
    _check_repo_id(repo_id)
    if _token_missing(None):
        raise ConfigError(f"push_to_hub {repo_id!r} needs a Hugging Face token: {_LOGIN}, then train again")


_LOGIN = "log in with `hf auth login` or set HF_TOKEN (a token with write access, from huggingface.co/settings/tokens)"


def _check_repo_id(repo_id: str) -> None:
    if not _is_repo_id(repo_id):
        raise ConfigError(
            f"{repo_id!r} is not a Hugging Face repository id; expected 'name' or 'namespace/name' of letters, "
            "digits, '-', '_' and '.' (e.g. your-name/spam-classifier)"
        )


def _token_missing(token: str | None) -> bool:
    from huggingface_hub import get_token

    return token is None and get_token() is None


def push_to_hub(model_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload a model directory to a Hugging Face Hub model repository, which is created when it does not exist.

    Every file of the directory goes, except hidden ones (staging copies of interrupted writes, editor files); a
    directory saved before bertfit wrote model cards gets its ``README.md`` first.

    Args:
        model_dir: A model directory written by ``bertfit train`` or ``bertfit export``.
        repo_id: ``namespace/name``, or ``name`` for the token's own account.
        private: Create the repository private (an existing repository keeps its visibility); default: the
            account's default visibility.
        token: A Hub token; default: ``HF_TOKEN`` or the one saved by ``hf auth login``.

    Returns:
        The repository's URL.

    Raises:
        ModelError: ``model_dir`` is not a model directory written by bertfit.
        ConfigError: ``repo_id`` is not a repository id.
        HubError: No token, or the Hub refused or could not be reached; the message says how to retry.

    >>> push_to_hub("runs/spam", "your-name/spam-classifier")  # doctest: +SKIP
    'https://huggingface.co/your-name/spam-classifier'
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    model_dir = Path(model_dir)
    _check_repo_id(repo_id)
    _ensure_readme(model_dir)
    retry = f"bertfit push {shlex.quote(str(model_dir))} {repo_id}" + (" --private" if private else "")
    if _token_missing(token):
        raise HubError(f"no Hugging Face token to upload {model_dir} to {repo_id!r}: {_LOGIN}, then run: {retry}")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=True if private else None, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=model_dir,
            repo_type="model",
            commit_message=f"Upload {model_dir.name} (bertfit {__version__})",
            ignore_patterns=IGNORED,
        )
    # HfHubHTTPError derives from OSError and from the HTTP client's HTTPError, so its bases catch the transport
    # failures (no route, DNS, timeouts, offline mode) as well as the Hub's refusals.
    except HfHubHTTPError.__bases__ as err:
        raise HubError(_failure(err, model_dir, repo_id, retry)) from None
    logger.info("uploaded %s to %s", model_dir, repo)
    return str(repo)


def _ensure_readme(model_dir: Path) -> None:
    if not (model_dir / CARD_FILE).is_file():
        raise ModelError(
            f"{model_dir} is not a model directory written by bertfit (it has no {CARD_FILE}); pass the --output-dir "
            "of 'bertfit train' or of 'bertfit export'"
        )
    if (model_dir / README_FILE).is_file():
        return
    files = read_model_files(model_dir)
    with atomic_file(model_dir / README_FILE) as handle:
        handle.write(str(model_card(files.card, files.metrics, model_dir.absolute().name)))
    logger.info("wrote the model card %s (the model was saved before bertfit wrote model cards)", README_FILE)


def _failure(err: Exception, model_dir: Path, repo_id: str, retry: str) -> str:
    detail = error_summary(err)
    status = getattr(getattr(err, "response", None), "status_code", None)
    fix = f"check the token ({_LOGIN}), then " if status in (401, 403) else ""
    return (
        f"could not upload {model_dir} to the Hugging Face Hub repository {repo_id!r}: {detail}. The model is saved "
        f"locally at {model_dir}; {fix}retry the upload with: {retry}"
    )
