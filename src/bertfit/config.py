"""TrainConfig: every option a user tunes, validated before any model is loaded."""

from __future__ import annotations

import difflib
import functools
import json
import math
import numbers
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .exceptions import ConfigError

__all__ = [
    "TrainConfig",
    "METRICS_FOR_BEST_MODEL",
    "SINGLE_LABEL_METRICS",
    "MAX_POS_WEIGHT",
    "PRECISIONS",
    "TRACKERS",
    "LONG_TEXT_MODES",
    "LEXICAL_MODES",
    "AGGREGATES",
    "CHUNK_MAX_LENGTH",
    "resolve_stride",
]

METRICS_FOR_BEST_MODEL = ("macro_f1", "accuracy", "micro_f1", "weighted_f1", "mcc", "f1", "loss")
SINGLE_LABEL_METRICS = ("mcc", "f1")  # not computed for multi-label tasks
# The largest balanced pos_weight of a multi-label class: a label on 1 text in 1,000 would otherwise weigh 999, and
# its few texts would dominate the gradient.
MAX_POS_WEIGHT = 100.0
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
TRACKERS = ("mlflow", "tensorboard", "wandb")
LONG_TEXT_MODES = ("truncate", "chunk")
AGGREGATES = ("mean", "max")
WINDOW_SAMPLING = ("spaced", "random")
# evals_per_epoch's automatic choice: this many evaluations per epoch where the validation windows hold at most this
# share of an epoch's training tokens (an evaluation, forward passes only in bf16, then costs a few percent of an
# epoch); else one. Measured: README, Defaults.
AUTO_EVALS_PER_EPOCH = 2
AUTO_EVAL_TOKEN_SHARE = 0.25
# The longest window chunk mode picks by itself: attention cost grows with the window, and a document is covered by
# its windows either way. On 20 Newsgroups (stripped), training on each post's first 128-token window (max_windows 1)
# and predicting from all its windows matched 256-token windows x 8 per post in a quarter of the time (README, Long
# documents).
CHUNK_MAX_LENGTH = 128
# epochs' automatic choice: AUTO_EPOCHS, or LONG_DOCUMENT_EPOCHS where at least LONG_DOCUMENT_SHARE of the training
# texts are longer than one window (long documents: an epoch of 20 Newsgroups costs 4-6 minutes on the 2-core AMX
# machine, and the lexical head reads every word of each post; a third epoch took the encoder from 0.677 to 0.703
# macro-F1 and the average with the head above TF-IDF by 2.3 standard errors instead of 1.8). Measured: README, Long
# documents.
AUTO_EPOCHS = 4
LONG_DOCUMENT_EPOCHS = 3
LONG_DOCUMENT_SHARE = 0.25
LEXICAL_MODES = ("auto", "on", "off")


@dataclass
class TrainConfig:
    """Options of one fine-tuning run. Keys of a config file and CLI flags use the same names.

    The defaults were chosen by measurement for the embedded default model (all-MiniLM-L6-v2, 6 layers): see the
    README's "Defaults" section. Every value is parsed to its field's declared type or refused with a ConfigError,
    however the config is built (the rules: :meth:`from_dict`).

    >>> TrainConfig(epochs=2, learning_rate=1e-4).epochs
    2
    """

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Local model directory or Hugging Face hub id; default: the embedded all-MiniLM-L6-v2."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where the trained model is written."})
    text_column: str = field(default="text", metadata={"help": "Column holding the texts."})
    label_column: str = field(default="label", metadata={"help": "Column holding the labels."})
    label_sep: str | None = field(
        default=None,
        metadata={
            "help": "Separator between the labels of one cell, e.g. ';' for 'joy;love': trains a multi-label model "
            "(a sigmoid per label, binary cross-entropy, one decision threshold per label). A label column of "
            "lists (JSONL, Parquet) is multi-label without it."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest input in tokens (the window size with long_text chunk); default: the training texts' "
            f"99th percentile, capped at the model's limit (at {CHUNK_MAX_LENGTH} with long_text chunk)."
        },
    )
    long_text: str = field(
        default="chunk",
        metadata={
            "help": "Texts longer than max_length: chunk (split them into overlapping windows of max_length tokens, "
            "train on each window with its text's label, and predict a text from the aggregate of its windows' "
            "logits; needs a fast tokenizer, else truncate is used) or truncate (keep their first max_length tokens)."
        },
    )
    stride: int | None = field(
        default=None,
        metadata={"help": "long_text chunk: tokens shared by consecutive windows; default: max_length // 4."},
    )
    aggregate: str = field(
        default="mean",
        metadata={"help": "long_text chunk: a text's logits are the mean or the (per-class) max of its windows'."},
    )
    max_windows: int = field(
        default=1,
        metadata={
            "help": "long_text chunk: most windows per training text, evenly spaced from its first to its last "
            "(1: its first window; 0: all); evaluation and prediction always use every window."
        },
    )
    window_sampling: str = field(
        default="spaced",
        metadata={
            "help": "long_text chunk: which windows of a long training text train in an epoch: spaced (the same "
            "max_windows, evenly spaced, every epoch) or random (max_windows drawn anew each epoch: the epochs "
            "together see more of each text for the same cost)."
        },
    )
    epochs: float | None = field(
        default=None,
        metadata={
            "help": f"Training epochs; default: {AUTO_EPOCHS}, or {LONG_DOCUMENT_EPOCHS} for long documents (at least "
            f"{LONG_DOCUMENT_SHARE:.0%} of the training texts longer than one window)."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Texts per training step."})
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Token-budget batches instead of --batch-size: each step takes as many texts of similar length "
            "as keep texts x longest length within this many tokens, e.g. 1024 (even cost per step)."
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with a linear learning-rate warm-up."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 turns clipping off)."})
    seed: int = field(default=42, metadata={"help": "Random seed of the split, initialization and shuffling."})
    val_size: float = field(
        default=0.1,
        metadata={
            "help": "Share of the training file held out for validation when no validation file is given (stratified)."
        },
    )
    eval_strategy: str = field(
        default="epoch",
        metadata={"help": "Evaluate every 'epoch' (evals_per_epoch times) or every eval_steps 'steps'."},
    )
    evals_per_epoch: int | None = field(
        default=None,
        metadata={
            "help": "With eval_strategy 'epoch': evaluations per epoch, evenly spaced (the last at its end); default: "
            f"{AUTO_EVALS_PER_EPOCH} where evaluating costs little next to training (the validation windows hold at "
            f"most {AUTO_EVAL_TOKEN_SHARE:.0%} of an epoch's training tokens), else 1."
        },
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Steps between evaluations with eval_strategy 'steps'."}
    )
    metric_for_best_model: str = field(
        default="macro_f1",
        metadata={
            "help": "Validation metric that picks the checkpoint kept at the end: "
            + ", ".join(METRICS_FOR_BEST_MODEL)
            + " (multi-label tasks: not mcc or f1; accuracy is subset accuracy there)."
        },
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement (default: never)."}
    )
    positive_label: str | None = field(
        default=None,
        metadata={
            "help": "Positive class of a binary task for precision/recall/F1/specificity; default: the "
            "minority class in train."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "Training arithmetic: auto (bf16 where the CPU/GPU supports it, else fp16 on GPU, else "
            "fp32), bf16, fp16 or fp32."
        },
    )
    class_weights: str | dict[str, float] = field(
        default="none",
        metadata={
            "help": "Weights of the classes in the cross-entropy loss: none, balanced (n_texts / (n_classes x "
            "count of the class), as scikit-learn) or a JSON object of label to weight, e.g. '{\"spam\": 5}' "
            "(labels left out weigh 1). Multi-label tasks: the weight of each label's positive texts in its binary "
            "cross-entropy (pos_weight); balanced is negatives / positives of the label, at most "
            + f"{MAX_POS_WEIGHT:g}."
        },
    )
    threshold_metric: str = field(
        default="f1",
        metadata={
            "help": "Binary tasks: tune the decision threshold on validation for f1 (the positive class's F1), "
            "'precision>=0.95' (the best recall at that precision), 'recall>=0.9' (the best precision at that "
            "recall), or none (predict the most probable class). Multi-label tasks: one threshold per label by the "
            "same rule on that label's probability (labels with fewer than 10 positive validation texts keep 0.5); "
            "none keeps 0.5."
        },
    )
    calibrate: bool = field(
        default=True,
        metadata={
            "help": "Fit a temperature on validation (temperature scaling: every logit divided by one T that "
            "minimizes the validation log-loss) so that probabilities match how often the model is right; labels "
            "by argmax never change, thresholds are tuned after it. Needs 50 validation texts, else T stays 1. "
            "--no-calibrate keeps T = 1."
        },
    )
    eval_batch_size: int = field(default=128, metadata={"help": "Texts per evaluation and prediction batch."})
    freeze_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the token-embedding table (half of MiniLM's weights) fixed: faster optimizer steps, but "
            "1 point lower on SST-2 in our measurement (README, Speed)."
        },
    )
    lazy_embeddings: bool = field(
        default=True,
        metadata={
            "help": "Train the token-embedding table with a row-sparse (lazy) AdamW update: each step reads and "
            "writes only the rows its batch uses (one process on a CPU; elsewhere the update is dense). "
            "--no-lazy-embeddings updates the whole table every step."
        },
    )
    native: bool = field(
        default=True,
        metadata={
            "help": "Train a plain BERT (the default model among them) as bertfit's own PyTorch BERT, with the math "
            "of transformers' BertForSequenceClassification (the same loss and gradients) but without importing "
            "transformers (about 3 s of a run). Other models, and --no-native, train transformers' model."
        },
    )
    lexical: str = field(
        default="auto",
        metadata={
            "help": "Single-label tasks: average the encoder's probabilities with those of TF-IDF + logistic "
            "regression over every word of the text (the lexical head, saved with the model and used by every "
            "prediction): auto (kept when the average beats the encoder alone on validation by more than the noise), "
            "on (always) or off."
        },
    )
    baselines: bool = field(
        default=True,
        metadata={
            "help": "After training, fit the majority-class, TF-IDF + logistic regression and frozen-embeddings + "
            "logistic regression baselines on the same split and show them beside the model (seconds to a few "
            "minutes; --no-baselines skips them)."
        },
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model with torch.compile (see the README's Speed section)."},
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Tokenization cache, so a second run on the same texts skips tokenizing; default "
            "$BERTFIT_CACHE or ~/.cache/bertfit; 'none' turns it off."
        },
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run custom code of a hub model (off unless you trust its author)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing, non-empty output directory."})
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue an interrupted run from its last checkpoint (kept beside --output-dir until the run "
            "finishes); the data and options must be the same."
        },
    )
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Load a model whose weights are only a pickle-based pytorch_model.bin (loading pickles can run "
            "arbitrary code: only for a source you trust); by default only safetensors weights load."
        },
    )
    track: str | None = field(
        default=None,
        metadata={
            "help": "Also send parameters and metrics to an experiment tracker: " + ", ".join(TRACKERS) + " (the "
            "output directory always gets them in bertfit.json)."
        },
    )
    tracking_uri: str | None = field(
        default=None,
        metadata={
            "help": "MLflow tracking URI (default ./mlruns, a local file store) or TensorBoard log directory "
            "(default ./tensorboard); wandb reads WANDB_PROJECT/WANDB_MODE instead."
        },
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "After saving, upload the model directory (with its model card README.md) to this Hugging Face "
            "Hub repository, e.g. your-name/spam-classifier, created when missing; token: HF_TOKEN or `hf auth "
            "login`. If the upload fails the model stays saved: retry with `bertfit push OUTPUT_DIR REPO_ID`."
        },
    )
    hub_private: bool = field(
        default=False,
        metadata={
            "help": "With push_to_hub: create the repository private (an existing one keeps its visibility); "
            "default: the account's default visibility."
        },
    )

    def __post_init__(self) -> None:
        _parse_fields(self)
        if self.epochs is not None and self.epochs.is_integer():
            self.epochs = int(self.epochs)
        _check(self.epochs is None or self.epochs > 0, "epochs", self.epochs, "a number > 0")
        _check(self.lexical in LEXICAL_MODES, "lexical", self.lexical, "one of " + ", ".join(LEXICAL_MODES))
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        _check(
            self.max_tokens_per_batch is None or self.max_tokens_per_batch >= 8,
            "max_tokens_per_batch",
            self.max_tokens_per_batch,
            "an integer >= 8 (padded tokens per training batch), e.g. 1024",
        )
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _check(0 < self.learning_rate < 1, "learning_rate", self.learning_rate, "a number between 0 and 1, e.g. 1e-4")
        _check(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "a number in [0, 1)")
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _check(self.max_grad_norm >= 0, "max_grad_norm", self.max_grad_norm, "a number >= 0")
        _check(0 < self.val_size < 1, "val_size", self.val_size, "a share between 0 and 1, e.g. 0.1")
        _check(0 <= self.seed <= _MAX_SEED, "seed", self.seed, f"an integer from 0 to {_MAX_SEED} (numpy's range)")
        _check(self.max_length is None or self.max_length >= 8, "max_length", self.max_length, "an integer >= 8")
        self._check_long_text()
        _check(self.eval_strategy in ("epoch", "steps"), "eval_strategy", self.eval_strategy, "'epoch' or 'steps'")
        _check(
            self.evals_per_epoch is None or self.evals_per_epoch >= 1,
            "evals_per_epoch",
            self.evals_per_epoch,
            "an integer >= 1, or None for the automatic choice",
        )
        _check(
            self.eval_strategy != "steps" or (self.eval_steps or 0) >= 1,
            "eval_steps",
            self.eval_steps,
            "an integer >= 1 with eval_strategy 'steps'",
        )
        _check(
            self.metric_for_best_model in METRICS_FOR_BEST_MODEL,
            "metric_for_best_model",
            self.metric_for_best_model,
            "one of " + ", ".join(METRICS_FOR_BEST_MODEL),
        )
        _check(
            self.early_stopping_patience is None or self.early_stopping_patience >= 1,
            "early_stopping_patience",
            self.early_stopping_patience,
            "an integer >= 1",
        )
        _check(self.precision in PRECISIONS, "precision", self.precision, "one of " + ", ".join(PRECISIONS))
        _check(
            self.label_sep is None or (isinstance(self.label_sep, str) and self.label_sep != ""),
            "label_sep",
            self.label_sep,
            "a non-empty separator such as ';', or None for single-label data",
        )
        _check(self.track is None or self.track in TRACKERS, "track", self.track, "one of " + ", ".join(TRACKERS))
        self.class_weights = _parse_class_weights(self.class_weights)
        _check(
            re.fullmatch(r"none|f1|(precision|recall)>=(0(\.\d+)?|1(\.0*)?)", str(self.threshold_metric)) is not None,
            "threshold_metric",
            self.threshold_metric,
            "none, f1, 'precision>=P' or 'recall>=R' with P, R between 0 and 1",
        )

    def _check_long_text(self) -> None:
        _check(self.long_text in LONG_TEXT_MODES, "long_text", self.long_text, "one of " + ", ".join(LONG_TEXT_MODES))
        _check(self.aggregate in AGGREGATES, "aggregate", self.aggregate, "one of " + ", ".join(AGGREGATES))
        _check(self.max_windows >= 0, "max_windows", self.max_windows, "an integer >= 0 (0: all windows)")
        _check(
            self.window_sampling in WINDOW_SAMPLING, "window_sampling", self.window_sampling, "'spaced' or 'random'"
        )
        _check(self.stride is None or self.stride >= 0, "stride", self.stride, "an integer >= 0")
        if self.stride is not None and self.max_length is not None:  # else checked once train chooses max_length
            resolve_stride(self.stride, self.max_length)
        if self.long_text == "truncate":
            defaults = {f.name: f.default for f in fields(self)}
            chunk_only = [
                name
                for name in ("stride", "aggregate", "max_windows", "window_sampling")
                if getattr(self, name) != defaults[name]
            ]
            if chunk_only:
                raise ConfigError(
                    f"{', '.join(chunk_only)} apply only with long_text 'chunk'; pass --long-text chunk or leave "
                    "them at their defaults"
                )

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a dict, refusing unknown keys with the closest valid name.

        Keys may use dashes for underscores (``batch-size``). Each value is parsed to its field's declared type, as
        direct construction does, so that config files of any format read alike:

        - ``bool``: true/false, the integers 1/0 and the strings "true", "false", "yes", "no", "1", "0" (any case);
          anything else is refused (so ``"overwrite": "false"`` is False, never ``bool("false")``).
        - ``int``: integers, floats with an integral value (``8.0``) and strings of digits (``"42"``); refused:
          ``8.5``, ``True``, ``"1e3"``.
        - ``float``: integers, floats and decimal strings (``"1e-4"``, which YAML reads as a string); refused:
          booleans, NaN and infinities.
        - ``str``: strings, and integers as their decimal string (YAML reads ``positive_label: 1`` as a number);
          refused: booleans (YAML reads ``yes`` as true: quote it), floats, lists and mappings.
        - ``X | None``: also None (YAML ``null``), and for non-string X the strings "none" and "null" (TOML has no
          null); a string field keeps "none" as text (``cache_dir: none`` turns the cache off).
        - ``class_weights`` (``str | dict[str, float]``): "none", "balanced", or a mapping (or its JSON text) of
          label to a positive finite weight, read by the ``float`` rule.

        Raises:
            ConfigError: An unknown, repeated (``batch-size`` and ``batch_size``) or non-string key, or a value that
                is not of its key's type or is out of range.

        >>> TrainConfig.from_dict({"overwrite": "false", "batch-size": "16"}).overwrite
        False
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"a config must be a mapping of option names to values, got {type(values).__name__}")
        names = [f.name for f in fields(cls)]
        values = _normalized_keys(values)
        unknown = sorted(set(values) - set(names))
        if unknown:
            hints = [
                f"{key!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(key, names, 1))
                else repr(key)
                for key in unknown
            ]
            raise ConfigError(f"unknown config key(s) {', '.join(hints)}; valid keys: {', '.join(sorted(names))}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> TrainConfig:
        """Read a JSON, YAML or TOML config file; ``overrides`` that are not None win over the file.

        Raises:
            ConfigError: The file is missing, unparsable, not a mapping, or holds invalid options.
        """
        values = read_config_file(path)
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_dict(values)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping stored in a .json, .yaml/.yml or .toml file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; check the --config path")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
        if suffix == ".json":
            values = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        elif suffix == ".toml":
            values = _toml().loads(text)
        else:
            raise ConfigError(f"unknown config format {suffix or '(none)'} of {path}; use .json, .yaml/.yml or .toml")
    except ConfigError:
        raise
    except Exception as err:  # json, yaml and toml each raise their own parse error type
        raise ConfigError(f"could not parse config file {path}: {err}") from None
    if not isinstance(values, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of option names to values, got {type(values).__name__}"
        )
    return values


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def _normalized_keys(values: Mapping[Any, Any]) -> dict[str, Any]:
    normalized: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"config keys must be option names (strings), got {_shown(key)} ({type(key).__name__}); "
                "check the config file's keys"
            )
        name = key.replace("-", "_")
        if name in normalized:
            raise ConfigError(f"config key {name!r} is given twice (as {key!r} too); keep one of them")
        normalized[name] = value
    return normalized


def _parse_class_weights(value: Any) -> str | dict[str, float]:
    if isinstance(value, str) and value in ("none", "balanced"):
        return value
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
            parsed = None
    weights = None
    if isinstance(parsed, Mapping):
        try:
            weights = {str(label): _to_float(weight) for label, weight in parsed.items()}
        except (TypeError, ValueError, OverflowError):
            weights = None
    ok = weights is not None and all(weight > 0 for weight in weights.values())
    _check(ok, "class_weights", value, "'none', 'balanced' or a JSON object of label to positive weight")
    return weights


# The largest seed numpy (and so scikit-learn's split) accepts.
_MAX_SEED = 2**32 - 1
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    word = value.strip().lower() if isinstance(value, str) else None
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ValueError(value)


def _to_int(value: Any) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():  # NaN and infinities are not integers
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)  # a ValueError past Python's 4,300 digits
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)  # an OverflowError for integers beyond the float range
    elif isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        number = float(value)
    else:
        raise ValueError(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise ValueError(value)


# Each declared type (without None): its parser, and what a message says it expects.
_PARSERS: dict[type, tuple[Callable[[Any], Any], str]] = {
    bool: (_to_bool, "true or false (or one of the strings 'true', 'false', 'yes', 'no', '1', '0')"),
    int: (_to_int, "an integer such as 42 (or a string of digits such as '42')"),
    float: (_to_float, "a finite number such as 0.1 or 1e-4"),
    str: (_to_str, "a string (quote it in YAML)"),
}


@functools.cache
def _field_types(cls: type) -> dict[str, tuple[bool, type | None]]:
    # Per field: whether None is allowed, and the one type of _PARSERS it holds otherwise (None: a field with its
    # own parser, as class_weights).
    hints = typing.get_type_hints(cls)
    parsed = {}
    for f in fields(cls):
        annotation = hints[f.name]
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        options = typing.get_args(annotation) if union else (annotation,)
        kinds = [kind for kind in options if kind is not type(None)]
        parsed[f.name] = (len(kinds) < len(options), kinds[0] if len(kinds) == 1 and kinds[0] in _PARSERS else None)
    return parsed


def _parse_fields(config: TrainConfig) -> None:
    for name, (optional, kind) in _field_types(type(config)).items():
        value = getattr(config, name)
        if optional and (
            value is None or (kind is not str and isinstance(value, str) and value.strip().lower() in ("none", "null"))
        ):
            setattr(config, name, None)
        elif kind is not None:
            parse, expected = _PARSERS[kind]
            try:
                setattr(config, name, parse(value))
            except (TypeError, ValueError, OverflowError):
                expected += " or null" if optional else ""
                raise ConfigError(
                    f"{name} must be {expected}, got {_shown(value)} ({type(value).__name__}); fix {name} in the "
                    "config file or call"
                ) from None


def resolve_stride(stride: int | None, max_length: int) -> int:
    """The overlap in tokens of consecutive windows: ``stride``, or ``max_length // 4`` when it is None.

    Raises:
        ConfigError: ``stride`` is negative or above half of ``max_length`` (windows would mostly repeat).

    >>> resolve_stride(None, 256)
    64
    """
    if stride is None:
        return max_length // 4
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 <= stride <= max_length // 2:
        raise ConfigError(
            f"stride must be an integer from 0 to {max_length // 2} (half of max_length {max_length}), got "
            f"{stride!r}; lower --stride or raise --max-length"
        )
    return stride


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name} must be {expected}, got {_shown(value)}")


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + " ..."
