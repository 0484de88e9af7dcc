"""The stages of a training run, in order: data -> features -> train -> validate. :func:`fit` runs them and hands
back a :class:`Fitted` model that the save stage (:mod:`bertfit.save`) can write as it is.

- **data**: read the files, make multi-label rows, check the labels, split off a stratified validation share;
- **features**: load the encoder and tokenizer, choose ``max_length`` from the training texts' token counts, and
  tokenize both splits into windows (:mod:`bertfit.features`);
- **train**: fit the model and stop at the best evaluated state (:mod:`bertfit.trainer`);
- **validate**: predict validation once, fit the lexical head (:mod:`bertfit.lexical`), tune the decision, compute
  the final metrics, warn, fit the baselines (:mod:`bertfit.validate`).
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import trainer as stage
from ._version import __version__
from .backbone import (
    DEFAULT_MODEL_NAME,
    MULTI_LABEL_PROBLEM,
    load_sequence_classifier,
    load_tokenizer,
    model_max_length,
    position_limit,
    resolve_model,
)
from .baseline import frozen_embeddings
from .cache import cache_directory, tokenize_cached
from .card import BestEpoch, DataSummary, ModelCard, TrainingRecord
from .checkpoint import Checkpointer, checkpoint_dir
from .config import (
    AUTO_EPOCHS,
    LONG_DOCUMENT_EPOCHS,
    LONG_DOCUMENT_SHARE,
    SINGLE_LABEL_METRICS,
    TrainConfig,
    resolve_stride,
)
from .data import TextDataset, check_validation, load_data, train_val_split
from .decision import DecisionRule, multi_hot
from .exceptions import ConfigError, DataError, TrainingError
from .features import Encoded, Windowing, aggregate_logits, choose_max_length, encode
from .hardware import Precision, resolve_precision
from .inference import torch_logits
from .lexical import LexicalHead
from .metrics import minority_label
from .track import Tracker
from .validate import Validation, validate

__all__ = ["Fitted", "Prepared", "fit", "prepare", "prepare_data", "validate_fitted"]

logger = logging.getLogger(__name__)

# The precision check (auto against fp32) runs on at most this many validation texts: enough for an agreement known
# to about 0.1%, at a fraction of a pass over a large validation set. Of them, the second precision is computed in
# rounds of PRECISION_CHECK_ROUND texts nearest the decision boundary, until the next text's margin exceeds
# PRECISION_CHECK_FACTOR times the largest probability difference seen (see _precision_check).
PRECISION_CHECK_TEXTS = 2000
PRECISION_CHECK_ROUND = 200
PRECISION_CHECK_FACTOR = 4.0


@dataclass
class Fitted:
    """A trained model and what the run learned about it, ready for :func:`bertfit.save.save_model`."""

    model: Any
    tokenizer: Any
    card: ModelCard
    metrics: dict[str, Any] | None
    records: list[dict[str, Any]] | None
    result: stage.TrainResult
    config: TrainConfig
    checkpointer: Checkpointer | None = None
    lexical: LexicalHead | None = None  # the lexical head, when the validate stage kept it

    def raise_if_diverged(self, saved_to: str | None) -> None:
        """Raise the TrainingError of a run whose loss became NaN or infinite (after the best state was saved).

        Raises:
            TrainingError: The loss diverged; ``saved_to`` names where the best state before it was written.
        """
        if self.result.diverged_at is not None:
            raise TrainingError(stage.divergence_message(self.config, self.result, saved_to), saved_to=saved_to)


@dataclass
class _Features:
    windowing: Windowing
    train: Encoded
    validation: Encoded
    long_share: float = 0.0  # of the training texts longer than one window


@dataclass
class Prepared:
    """The data and features stages of a run: the splits and their token windows (see :func:`prepare`)."""

    train: TextDataset
    validation: TextDataset
    origin: str  # of the validation split: "split" (held out of the training data) or "file"
    features: _Features


def prepare(config: TrainConfig, train_data, validation_data=None) -> Prepared:
    """Run the data and features stages once, for runs that differ only in training options (the trials of
    :mod:`bertfit.tune`): ``fit(config, prepared)`` skips both, whose results depend only on the data and on the
    data, model and window options, and are deterministic. The encoder is loaded for its input limit, then dropped.

    Raises:
        DataError, ConfigError, ModelError: Unusable data, options or model.
    """
    train_ds, val_ds, origin = prepare_data(config, train_data, validation_data)
    model, tokenizer = _load(config, train_ds, _decision(config, train_ds), None)
    return Prepared(train_ds, val_ds, origin, _features(config, tokenizer, model, train_ds, val_ds))


def fit(
    config: TrainConfig,
    train_data: TextDataset | str | Path | Prepared,
    validation_data: TextDataset | str | Path | None = None,
    tracker: Tracker | None = None,
    *,
    on_evaluate: Callable[[dict[str, Any]], None] | None = None,
    validate: bool = True,
) -> Fitted:
    """Run the data, features, train and validate stages (see the module docstring); nothing is written.

    ``tracker`` (made from ``config.track`` when None) receives the run's logs; a tracker made here is also closed
    here, one passed in is closed by the caller (after saving, so that it can log the model directory).
    ``train_data`` may be the result of :func:`prepare` (``validation_data`` is then ignored): the data and features
    stages are skipped. ``on_evaluate`` receives each evaluation's history row (see
    :func:`bertfit.trainer.run_training`). With ``validate`` False the validate stage is left to
    :func:`validate_fitted` (``metrics`` and ``records`` stay None).

    Raises:
        DataError, ConfigError, ModelError: Unusable data, options or model.
        TrainingError: The loss diverged before any evaluation finished.
    """
    entered = time.perf_counter()
    own_tracker = tracker is None
    tracker = tracker or Tracker(config, main_process=stage.is_main_process())
    prepared = train_data if isinstance(train_data, Prepared) else None
    if prepared is None:
        train_ds, val_ds, val_from = prepare_data(config, train_data, validation_data)
    else:
        train_ds, val_ds, val_from = prepared.train, prepared.validation, prepared.origin
    checkpointer, resume = _checkpoints(config, train_ds, val_ds)
    decision = _decision(config, train_ds)
    class_weights = stage.class_weight_vector(config.class_weights, train_ds.labels, train_ds.classes)
    precision = resolve_precision(config.precision)
    logger.info("precision: %s on %s (weights and optimizer state stay fp32; set --precision)", *precision)
    tracker.start()  # a tracker that cannot open a run fails here, before the model loads
    with tracker.closing_on_error():
        _seed(config.seed)  # after the tracker's start, which may draw random numbers
        model, tokenizer = _load(config, train_ds, decision, class_weights)
        features = prepared.features if prepared else _features(config, tokenizer, model, train_ds, val_ds)
        config = _resolve_epochs(config, features)
        setup_seconds = time.perf_counter() - entered
        embeddings = None
        if config.baselines and stage.is_main_process():  # with the pretrained weights, while the model has them
            size = features.windowing.max_length
            texts, cache = (train_ds.texts, val_ds.texts), cache_directory(config.cache_dir)
            embeddings = frozen_embeddings(model, tokenizer, *texts, size, config.eval_batch_size, cache_dir=cache)
        splits, checkpoints = (train_ds, val_ds), (checkpointer, resume)
        hooks = (tracker, checkpoints, on_evaluate)
        result = _train(model, tokenizer, config, precision, features, splits, decision, class_weights, *hooks)
    if result.diverged_at is not None and result.best_row is None:
        raise TrainingError(stage.divergence_message(config, result, saved_to=None))
    record = _record(config, precision, result, features, train_ds, val_ds, val_from, setup_seconds)
    card = ModelCard(
        decision, features.windowing, config.model_name_or_path or DEFAULT_MODEL_NAME, __version__, record
    )
    if checkpointer is not None:
        record.checkpoints = {
            "writes": checkpointer.writes,
            "seconds": round(checkpointer.seconds, 2),
            "bytes": checkpointer.bytes,
        }
    fitted = Fitted(model, tokenizer, card, None, None, result, config, checkpointer)
    if not result.main_process or not validate:  # another rank of a distributed run (rank 0 validates), or later
        return fitted
    validate_fitted(fitted, Prepared(train_ds, val_ds, val_from, features), embeddings)
    if own_tracker:
        tracker.finish(fitted.metrics, None)
    return fitted


def validate_fitted(fitted: Fitted, prepared: Prepared, embeddings=None) -> None:
    """The validate stage of a run, on the logits of the evaluation that chose its state (:func:`fit` runs it, unless
    ``validate`` was False): ``fitted`` gets the tuned decision, metrics, records, warnings and baselines of
    ``fitted.config``. ``embeddings`` are the frozen-embedding baseline's, when computed before training."""
    record, config, result = fitted.card.training, fitted.config, fitted.result
    precision = Precision(record.precision, record.device)
    _validate(fitted, config, precision, prepared.features, (prepared.train, prepared.validation), embeddings)
    if result.diverged_at is not None:
        record.warnings.append(stage.divergence_message(config, result, saved_to=config.output_dir))


def prepare_data(config: TrainConfig, train_data, validation_data) -> tuple[TextDataset, TextDataset, str]:
    """The data stage: ``(train, validation, origin)``, origin "split" (held out of ``train_data``) or "file".

    Raises:
        DataError: Fewer than two classes, unknown validation labels, a split that cannot be stratified, ...
        ConfigError: A single-label selection metric for multi-label data.
    """
    read = {"text_column": config.text_column, "label_column": config.label_column, "label_sep": config.label_sep}
    if not isinstance(train_data, TextDataset):
        train_data = load_data(train_data, **read)
    if config.label_sep is not None:
        train_data = train_data.as_multi_label(config.label_sep)
    if len(train_data.classes) < 2:
        raise DataError(
            f"training data {train_data.source} has a single class {train_data.classes}; a classifier needs at least "
            "two classes (check --label-column" + (", and --label-sep" if train_data.multi_label else "") + ")"
        )
    if train_data.multi_label and config.metric_for_best_model in SINGLE_LABEL_METRICS:
        raise ConfigError(
            f"metric_for_best_model {config.metric_for_best_model!r} is not computed for multi-label tasks; pass "
            "--metric macro_f1, micro_f1, accuracy (subset accuracy), weighted_f1 or loss"
        )
    if validation_data is None:
        train_ds, val_ds = train_val_split(train_data, config.val_size, config.seed)
        logger.info(
            "held out a stratified %.0f%% of %s for validation: %d train / %d validation rows",
            100 * config.val_size,
            train_data.source,
            len(train_ds),
            len(val_ds),
        )
        check_validation(train_ds, val_ds)  # exact duplicates in the file land on both sides: say how many
        return train_ds, val_ds, "split"
    if not isinstance(validation_data, TextDataset):
        validation_data = load_data(validation_data, **read)
    if train_data.multi_label:
        validation_data = validation_data.as_multi_label(config.label_sep)
    check_validation(train_data, validation_data)
    return train_data, validation_data, "file"


def _decision(config: TrainConfig, train_ds: TextDataset) -> DecisionRule:
    # The untuned rule: the labels, the task kind and the positive class of a binary task.
    labels = train_ds.classes
    if len(labels) != 2 or train_ds.multi_label:
        if config.positive_label is not None:
            logger.warning(
                "ignoring positive_label %r: the task has %d %s, not 2 classes",
                config.positive_label,
                len(labels),
                "labels per text (multi-label)" if train_ds.multi_label else "classes",
            )
        return DecisionRule(tuple(labels), multi_label=train_ds.multi_label)
    positive = config.positive_label
    if positive is None:
        positive = minority_label(train_ds.labels)
        logger.info(
            "positive class for precision/recall/F1: %r (the minority class; set --positive-label to change)", positive
        )
    elif positive not in labels:
        raise ConfigError(
            f"positive_label {positive!r} is not a label of the training data {labels}; "
            "pass --positive-label with one of them"
        )
    return DecisionRule(tuple(labels), positive_label=positive)


def _seed(seed: int) -> None:
    # Python's, numpy's and torch's generators (every device's), as transformers' set_seed seeds them.
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load(config: TrainConfig, train_ds: TextDataset, decision: DecisionRule, class_weights):
    model_path = resolve_model(config.model_name_or_path)
    labels = list(decision.labels)
    native = None
    if config.native and not config.trust_remote_code:  # a plain BERT trains without importing transformers
        from .native import load_trainable

        native = load_trainable(model_path, labels, decision.multi_label)
    if native is not None:
        model, tokenizer = native
        logger.debug("training bertfit's own BERT (bertfit.native) for %s", model_path)
    else:
        model, tokenizer = _load_transformers(config, model_path, labels, decision.multi_label)
    if config.freeze_embeddings:
        stage.freeze_token_embeddings(model)
    if decision.multi_label:
        stage.init_prior_bias(model, train_ds.labels, labels, class_weights)
    return model, tokenizer


def _load_transformers(config: TrainConfig, model_path: str, labels: list[str], multi_label: bool):
    tokenizer = load_tokenizer(model_path, config.trust_remote_code)
    model = load_sequence_classifier(
        model_path,
        config.trust_remote_code,
        config.allow_pickle,
        num_labels=len(labels),
        label2id={label: i for i, label in enumerate(labels)},
        id2label=dict(enumerate(labels)),
        ignore_mismatched_sizes=True,
        **({"problem_type": MULTI_LABEL_PROBLEM} if multi_label else {}),
    )
    return model, tokenizer


def _features(config: TrainConfig, tokenizer, model, train_ds: TextDataset, val_ds: TextDataset) -> _Features:
    # The training texts are tokenized once at the model limit: their lengths choose max_length, and only the texts
    # longer than that are tokenized again (cut shorter, or split into windows).
    _check_max_length(config, model.config)
    cache = cache_directory(config.cache_dir)
    cut = config.max_length or model_max_length(tokenizer, model.config)
    first = tokenize_cached(tokenizer, train_ds.texts, cut, cache, desc="tokenizing train")
    max_length = config.max_length or choose_max_length(
        [len(ids) for ids in first["input_ids"]], cut, config.long_text
    )
    windowing = _windowing(config, max_length, tokenizer)
    # Random window sampling keeps every window and draws each epoch's (see trainer.Windows.epoch_windows).
    sampled = windowing.mode == "chunk" and config.window_sampling == "random"
    options = {"max_windows": 0 if sampled else config.max_windows} if windowing.mode == "chunk" else {}
    train = encode(tokenizer, train_ds.texts, windowing, cache_dir=cache, reuse=first, **options)
    validation = encode(tokenizer, val_ds.texts, windowing, cache_dir=cache, desc="tokenizing validation")
    # Long documents: the share of texts longer than one window, seen in validation's windows (chunk mode keeps all of
    # them) or in the training texts' token counts (cut at the model limit, unless --max-length cut them there).
    index = np.asarray(validation.text_index)
    split = float((np.bincount(index, minlength=len(val_ds)) > 1).mean()) if len(index) else 0.0
    counted = float(np.mean([len(ids) > max_length for ids in first["input_ids"]])) if len(train_ds) else 0.0
    long_share = max(split, counted)
    return _Features(windowing, train, validation, long_share)


def _check_max_length(config: TrainConfig, model_config) -> None:
    # A window longer than the position table would index past it deep in the first forward pass.
    limit = position_limit(model_config)
    if config.max_length and limit is not None and config.max_length > limit:
        raise ConfigError(
            f"max_length {config.max_length} is longer than model {config.model_name_or_path!r} can read: its "
            f"position embeddings reach {limit} tokens; pass --max-length {limit} or less (longer texts are split "
            "into windows of that length with --long-text chunk, the default)"
        )


def _resolve_epochs(config: TrainConfig, features: _Features) -> TrainConfig:
    # epochs None: AUTO_EPOCHS, or LONG_DOCUMENT_EPOCHS for long documents (see bertfit.config).
    if config.epochs is not None:
        return config
    long_documents = features.long_share >= LONG_DOCUMENT_SHARE
    epochs = LONG_DOCUMENT_EPOCHS if long_documents else AUTO_EPOCHS
    logger.info(
        "%d epochs (%.0f%% of the training texts are longer than one window of %d tokens%s; set --epochs to change)",
        epochs,
        100 * features.long_share,
        features.windowing.max_length,
        f": long documents, at least {LONG_DOCUMENT_SHARE:.0%}" if long_documents else "",
    )
    return replace(config, epochs=epochs)


def _windowing(config: TrainConfig, max_length: int, tokenizer) -> Windowing:
    if config.long_text == "truncate":
        return Windowing(max_length)
    if not getattr(tokenizer, "is_fast", False):  # windows come from the Rust tokenizer's overflowing tokens
        logger.warning(
            "long_text chunk needs a fast tokenizer and %s is not one: texts longer than %d tokens are truncated "
            "instead (pass --long-text truncate to silence this, or use a model that ships a tokenizer.json)",
            type(tokenizer).__name__,
            max_length,
        )
        return Windowing(max_length)
    windowing = Windowing(max_length, "chunk", resolve_stride(config.stride, max_length), config.aggregate)
    logger.info(
        "long_text chunk: windows of %d tokens overlapping by %d, at most %s per training text (%s); a text's "
        "logits are the %s of its windows'",
        max_length,
        windowing.stride,
        config.max_windows or "all",
        "drawn anew each epoch" if config.window_sampling == "random" else "the same, evenly spaced, every epoch",
        config.aggregate,
    )
    return windowing


def _windows(encoded: Encoded, dataset: TextDataset, labels: list[str], tokenizer, sample: int = 0, seed: int = 0):
    # Each window carries its text's target: a label id, or a float multi-hot row (BCE-with-logits targets).
    if dataset.multi_label:
        per_text = multi_hot(dataset.labels, labels).astype(np.float32)
    else:
        index = {label: i for i, label in enumerate(labels)}
        per_text = np.array([index[label] for label in dataset.labels], dtype=np.int64)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    return stage.Windows(encoded, per_text[encoded.text_index], pad_id, left, sample, seed)


def _train(model, tokenizer, config, precision, features, splits, decision, weights, tracker, checkpoints, hook=None):
    train_ds, val_ds = splits
    labels = list(decision.labels)
    metrics_fn = stage.epoch_metrics(
        labels,
        decision.positive_label,
        val_ds.labels,
        features.validation.text_index,
        features.windowing.aggregate,
        decision.multi_label,
    )
    sample = config.max_windows if features.windowing.mode == "chunk" and config.window_sampling == "random" else 0
    train = _windows(features.train, train_ds, labels, tokenizer, sample, config.seed)
    validation = _windows(features.validation, val_ds, labels, tokenizer)
    checkpointer, resume = checkpoints
    return stage.run_training(
        model, config, precision, train, validation, metrics_fn, weights, tracker, checkpointer, resume, hook
    )


def _checkpoints(config: TrainConfig, train_ds: TextDataset, val_ds: TextDataset):
    # (checkpointer, state to resume or None): checkpoints are kept beside the output directory, when there is one.
    if not config.output_dir:
        if config.resume:
            raise ConfigError("resume needs the output directory of the interrupted run; pass --output-dir")
        return None, None
    identity = {
        "data": {"train": train_ds.fingerprint(), "validation": val_ds.fingerprint()},
        "options": config.to_dict(),
    }
    checkpointer = Checkpointer(checkpoint_dir(config.output_dir), identity)
    if config.resume:
        return checkpointer, checkpointer.load()
    if checkpointer.exists() and stage.is_main_process():
        logger.warning(
            "an interrupted run left a checkpoint in %s; starting over replaces it (pass --resume to continue it)",
            checkpointer.directory,
        )
    return checkpointer, None


def _record(config, precision, result, features, train_ds, val_ds, val_from, setup_seconds) -> TrainingRecord:
    import importlib.metadata

    import torch

    best = result.best_row or {}
    windows = None
    if features.windowing.mode == "chunk":
        windows = {"train_windows": len(features.train), "validation_windows": len(features.validation)}
    return TrainingRecord(
        config=config.to_dict(),
        precision=precision.name,
        device=precision.device,
        environment={"platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
        train_data=_describe(train_ds),
        validation_data=_describe(val_ds, val_from),
        history=result.history,
        best=BestEpoch(best.get("epoch"), config.metric_for_best_model, best.get("_value")),
        schedule=result.schedule,
        log_history=result.log_history,
        setup_seconds=round(setup_seconds, 1),  # reading, splitting, loading and tokenizing
        train_seconds=round(result.seconds, 1),
        train_tokens=result.real_tokens,
        padding_share=round(result.padding_share, 4),
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"),
        },
        windows=windows,
    )


def _validate(fitted: Fitted, config: TrainConfig, precision: Precision, features: _Features, splits, embeddings):
    # The validation stage on the logits of the evaluation that chose the best state (at the training precision,
    # by default the one predict and serve use): no second pass over validation.
    train_ds, val_ds = splits
    card, result = fitted.card, fitted.result
    logits = aggregate_logits(
        result.best_logits, features.validation.text_index, len(val_ds), card.windowing.aggregate
    )
    options = {"seconds": result.best_eval_seconds or 0.0, "embeddings": embeddings}
    validation = validate(logits, card.decision, config, train_ds, val_ds, card.max_length, **options)
    record = card.training
    record.precision_check = _precision_check(fitted, config, validation, val_ds.texts, precision)
    record.validation_seconds = validation.seconds
    record.threshold_tuning = validation.tuning
    record.calibration = validation.calibration
    record.warnings.extend(validation.warnings)
    record.baselines = validation.baselines
    record.lexical = validation.fusion
    fitted.lexical = validation.lexical
    fitted.card = card.with_decision(validation.decision)
    fitted.metrics, fitted.records = validation.metrics, validation.records


def _precision_check(fitted: Fitted, config, validation: Validation, texts: list[str], trained: Precision):
    # How often predict's and serve's default precision (auto) takes the fp32 decision, on (at most
    # PRECISION_CHECK_TEXTS of) the validation texts. The evaluation gave the probabilities in one of the two (else
    # fp32 is computed for every text); the other is computed only where it can change a decision: in rounds of
    # PRECISION_CHECK_ROUND texts, nearest the decision boundary first (DecisionRule.margins), until the nearest text
    # not computed is farther from it than PRECISION_CHECK_FACTOR times the largest probability difference seen. Far
    # from the boundary a text keeps its decision unless its probabilities move by more than that, and they move less
    # there (a softmax or sigmoid is flattest far from the boundary).
    fast = resolve_precision("auto", trained.device)
    if fast.name == "fp32":
        return None
    n = min(len(texts), PRECISION_CHECK_TEXTS)
    card, rule, texts = fitted.card, validation.decision, texts[:n]
    exact = Precision("fp32", trained.device)

    def computed(precision: Precision, index: np.ndarray) -> np.ndarray:
        chosen = [texts[i] for i in index]
        model, tokenizer = fitted.model, fitted.tokenizer
        logits = torch_logits(model, tokenizer, chosen, card.windowing, precision, config.eval_batch_size)
        probs = rule.probabilities(logits)
        return probs if validation.lexical is None else validation.lexical.fuse(probs, chosen)

    # known: one side for every text (the evaluation's, when it ran in fast or fp32); other: the side computed.
    if trained.name in (fast.name, exact.name):
        known, other = validation.probs[:n], exact if trained.name == fast.name else fast
    else:  # trained in a third precision (fp16 where auto is bf16): the fp32 side is a pass of its own
        known, other = computed(exact, np.arange(n)), fast
    margins = rule.margins(known)
    order = np.argsort(margins, kind="stable")
    done, changed, largest = 0, 0, 0.0
    while done < n:
        index = order[done : done + PRECISION_CHECK_ROUND]
        probs = computed(other, index)
        same = rule.decide(probs) == rule.decide(known[index])
        changed += int((~(same.all(axis=1) if same.ndim == 2 else same)).sum())
        largest = max(largest, float(np.abs(probs - known[index]).max()))
        done += len(index)
        if done < n and margins[order[done]] > PRECISION_CHECK_FACTOR * largest:
            break
    agreement = 1.0 - changed / n if n else 1.0
    check = {
        "precision": fast.name,
        "texts": n,
        "computed_texts": done,  # the others are farther from the boundary than the factor times the largest diff
        "label_agreement": round(agreement, 6),
        "max_abs_prob_diff": round(largest, 6),
    }
    where = (
        f"all computed in {other.name}"
        if done == n
        else f"{other.name} computed for the {done} nearest the decision boundary, the others farther from it than "
        f"{PRECISION_CHECK_FACTOR:g}x the largest probability difference"
    )
    logger.info(
        "prediction in %s (the default of predict and serve) gives the fp32 decision on %.2f%% of %d validation "
        "texts (%s; largest probability difference %.2g; --precision fp32 for exact probabilities)",
        fast.name,
        100 * agreement,
        n,
        where,
        largest,
    )
    return check


def _describe(dataset: TextDataset, origin: str | None = None) -> DataSummary:
    return DataSummary(dataset.source, len(dataset), dataset.fingerprint(), dataset.label_counts(), origin)
