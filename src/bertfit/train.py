"""train(config, data) -> TextClassifier. The only module that touches transformers.Trainer.

The Trainer is the engine; around it bertfit adds what the tutorials lack: a stratified split, a max_length taken
from the data, long texts truncated or split into overlapping windows (scored per text: see chunking.py), dynamic
padding over length-grouped batches (never padding every text to max_length), bf16 autocast where the hardware has
it, the best epoch kept in memory and restored at the end (no optimizer-sized checkpoints on disk), a per-epoch
table, and a loud warning when the model collapsed onto one class.

Multi-label data (label sets) trains a sigmoid per label with binary cross-entropy (transformers' problem_type
"multi_label_classification", float multi-hot labels), then tunes one decision threshold per label on validation.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorWithPadding,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from . import progress
from ._version import __version__
from .batching import TokenBudgetBatchSampler
from .cache import cache_directory, tokenize_cached
from .chunking import CHUNK_MAX_LENGTH, Windowing, aggregate_logits, encode_windows, resolve_stride
from .config import MAX_POS_WEIGHT, SINGLE_LABEL_METRICS, TrainConfig
from .data import TextDataset, check_validation, load_data, multi_hot, train_val_split
from .evaluate import (
    MIN_POSITIVES_TO_TUNE,
    collapse_warning,
    compute_metrics,
    majority_label,
    minority_label,
    multi_label_metrics,
    tune_threshold,
    tune_thresholds,
)
from .exceptions import BertfitError, ConfigError, DataError, TrainingError
from .explore import suggest_max_length
from .model import (
    DEFAULT_MODEL_NAME,
    MULTI_LABEL_PROBLEM,
    TextClassifier,
    check_output_dir,
    decide,
    decision_names,
    load_sequence_classifier,
    load_tokenizer,
    model_max_length,
    resolve_model,
    resolve_precision,
)
from .report import prediction_records
from .track import Tracker

__all__ = [
    "train",
    "choose_max_length",
    "class_weight_vector",
    "init_prior_bias",
    "format_history",
    "is_main_process",
]

logger = logging.getLogger(__name__)

_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds")
# Multi-label runs show micro-F1 where single-label runs show accuracy (subset accuracy is a harsh, low number).
_MULTI_LABEL_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "micro_f1", "macro_f1", "seconds")


def train(
    config: TrainConfig,
    train_data: TextDataset | str | Path,
    validation_data: TextDataset | str | Path | None = None,
) -> TextClassifier:
    """Fine-tune ``config.model_name_or_path`` on labelled texts and return the best epoch's classifier.

    Evaluates on validation after every epoch (or every ``eval_steps``), keeps the best state by
    ``config.metric_for_best_model``, restores it, computes the final metrics and, when ``config.output_dir`` is
    set, saves the model directory atomically. With ``config.long_text`` "chunk" it trains on overlapping windows of
    the texts, each labelled with its text's label; metrics, threshold and report stay per text (a text's logits
    aggregate its windows'), while the per-epoch validation loss is a mean over windows.

    Args:
        config: Training options.
        train_data: Labelled texts, or a file to read with ``config.text_column`` / ``config.label_column`` (and
            ``config.label_sep``). Label sets make a multi-label model.
        validation_data: Labelled texts or a file for model selection; default: a stratified
            ``config.val_size`` share of ``train_data``.

    Returns:
        The fitted classifier; ``.metrics`` holds the final validation metrics and ``.info_["history"]`` the
        per-evaluation table.

    Raises:
        DataError: Unusable data (fewer than two classes, unknown validation labels, ...).
        ConfigError: An option that does not fit the data or hardware.
        ModelError: The model cannot be loaded.
        OutputExistsError: ``config.output_dir`` holds files and ``config.overwrite`` is False.

    >>> clf = train(TrainConfig(output_dir="runs/spam"), "examples/sms_spam.csv")  # doctest: +SKIP
    """
    entered = time.perf_counter()
    if config.output_dir:
        # Every rank of a distributed run checks before training; only rank 0 writes, after training.
        check_output_dir(config.output_dir, config.overwrite)  # fail before minutes of training, not after
    tracker = Tracker(config, main_process=is_main_process())
    train_ds, val_ds, val_from = _prepare_data(config, train_data, validation_data)
    labels = train_ds.classes
    multi_label = train_ds.multi_label
    positive = _positive_label(config, train_ds, labels)
    class_weights = class_weight_vector(config.class_weights, train_ds.labels, labels)
    precision, device = resolve_precision(config.precision)
    logger.info("precision: %s on %s (weights and optimizer state stay fp32; set --precision)", precision, device)
    set_seed(config.seed)
    model_path = resolve_model(config.model_name_or_path)
    tokenizer = load_tokenizer(model_path, config.trust_remote_code)
    label2id = {label: i for i, label in enumerate(labels)}
    model = load_sequence_classifier(
        model_path,
        config.trust_remote_code,
        num_labels=len(labels),
        label2id=label2id,
        id2label=dict(enumerate(labels)),
        ignore_mismatched_sizes=True,
        **({"problem_type": MULTI_LABEL_PROBLEM} if multi_label else {}),
    )
    if config.freeze_embeddings:
        _freeze_token_embeddings(model)
    if multi_label:
        init_prior_bias(model, train_ds.labels, labels, class_weights)
    # Tokenize the training texts once: their lengths choose max_length, and only the texts longer than that are
    # tokenized again, cut shorter (truncate) or split into windows (chunk).
    cache = cache_directory(config.cache_dir)
    cut = config.max_length or model_max_length(tokenizer, model.config)
    train_encoded = tokenize_cached(tokenizer, train_ds.texts, cut, cache, desc="tokenizing train")
    lengths = [len(ids) for ids in train_encoded["input_ids"]]
    max_length = config.max_length or choose_max_length(lengths, cut, config.long_text)
    windowing = _windowing(config, max_length, tokenizer)
    if windowing.mode == "chunk":
        train_features, _ = _window_features(tokenizer, train_ds, label2id, windowing, config.max_windows, cache)
        val_features, val_texts = _window_features(tokenizer, val_ds, label2id, windowing, cache_dir=cache)
    else:
        train_features = _encode(tokenizer, train_ds, label2id, max_length, train_encoded)
        val_encoded = tokenize_cached(tokenizer, val_ds.texts, max_length, cache, desc="tokenizing validation")
        val_features, val_texts = _encode(tokenizer, val_ds, label2id, max_length, val_encoded), np.arange(len(val_ds))
    # Sort the validation windows by length (eval batches then have little padding), keeping val_texts[i], the
    # validation text of window i, aligned: the metrics are per text.
    order = np.argsort([len(f["input_ids"]) for f in val_features], kind="stable")
    val_features, val_texts = [val_features[i] for i in order], val_texts[order]

    monitor = _Monitor(config)
    counter = _TokenCounter(model)
    start = time.perf_counter()
    tracker.start()
    with tracker.closing_on_error(), tempfile.TemporaryDirectory(prefix="bertfit-") as workdir:
        trainer = _BertfitTrainer(
            class_weights=class_weights,
            max_tokens_per_batch=config.max_tokens_per_batch,
            model=model,
            args=_training_arguments(config, precision, device, workdir, tracker.report_to),
            train_dataset=train_features,
            eval_dataset=val_features,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_trainer_metrics(
                labels, positive, val_ds.labels, val_texts, windowing.aggregate, multi_label
            ),
            callbacks=[monitor],
        )
        _set_progress_callbacks(trainer)
        tracker.attach(trainer.callback_handler.callbacks)
        trainer.train()
    train_seconds = time.perf_counter() - start
    counter.handle.remove()
    if monitor.diverged_at is not None and monitor.best_state is None:
        raise TrainingError(_divergence_message(config, monitor, saved_to=None))
    if monitor.best_state is not None:
        model.load_state_dict(monitor.best_state)
    logger.info(
        "training took %.1f s, %.0f real tokens/s; padding was %.1f%% of the tokens in training batches",
        train_seconds,
        counter.real_tokens / train_seconds,
        100 * counter.padding_share,
    )

    best = monitor.best_row or {}
    info = {
        "bertfit_version": __version__,
        "labels": labels,
        "multi_label": multi_label,
        "positive_label": positive,
        "max_length": max_length,
        "long_text": windowing.to_info(),
        "base_model": config.model_name_or_path or DEFAULT_MODEL_NAME,
        "config": config.to_dict(),
        "precision": precision,
        "device": device,
        "environment": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
        "data": {"train": _describe(train_ds), "validation": {**_describe(val_ds), "from": val_from}},
        "history": monitor.rows,
        "schedule": monitor.schedule,
        "log_history": monitor.log_history,
        "best": {"epoch": best.get("epoch"), "metric": config.metric_for_best_model, "value": best.get("_value")},
        "setup_seconds": round(start - entered, 1),  # reading, splitting, loading and tokenizing
        "train_seconds": round(train_seconds, 1),
        "train_tokens": counter.real_tokens,
        "padding_share": round(counter.padding_share, 4),
        "warnings": [],
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }
    if windowing.mode == "chunk":
        info["long_text"].update(train_windows=len(train_features), validation_windows=len(val_features))
    classifier = TextClassifier._from_trained(model, tokenizer, info, batch_size=config.eval_batch_size)
    if not monitor.main_process:  # another rank of a distributed run: rank 0 evaluates, saves and tracks
        return classifier
    start = time.perf_counter()
    probs = classifier.predict_proba(val_ds.texts)  # (n_validation, n_labels)
    info["validation_seconds"] = round(time.perf_counter() - start, 2)
    # Before tuning: the most probable label, or (multi-label) each label at probability 0.5.
    untuned = decision_names(decide(probs, labels, multi_label=multi_label), labels)
    if config.threshold_metric != "none" and multi_label:
        _tune_thresholds(config, info, val_ds.labels, probs, untuned, labels)
    elif config.threshold_metric != "none" and positive is not None:
        _tune_threshold(config, info, val_ds.labels, probs, untuned, labels, positive)
    decisions = classifier.decide(probs)
    # Kept with the classifier: save_pretrained writes them and report.html from them.
    classifier.validation_predictions_ = prediction_records(val_ds.texts, val_ds.labels, probs, labels, decisions)
    classifier.metrics_ = compute_metrics(val_ds.labels, decision_names(decisions, labels), labels, positive)
    # Collapse is a property of the model, not of a threshold tuned to split its near-constant scores: untuned.
    warning = collapse_warning(val_ds.labels, untuned, majority=majority_label(train_ds.labels))
    if warning:
        logger.warning(warning)
        info["warnings"].append(warning)
    if config.baselines:
        info["baselines"] = _baselines(config, train_ds, val_ds, positive, max_length)
    if monitor.diverged_at is not None:
        info["warnings"].append(_divergence_message(config, monitor, saved_to=config.output_dir))
    if config.output_dir:
        classifier.save_pretrained(config.output_dir, overwrite=config.overwrite)
    tracker.finish(classifier.metrics_, config.output_dir)
    if monitor.diverged_at is not None:
        raise TrainingError(info["warnings"][-1], saved_to=config.output_dir)
    return classifier


def _baselines(
    config: TrainConfig, train_ds: TextDataset, val_ds: TextDataset, positive: str | None, max_length: int
) -> dict[str, dict[str, Any]]:
    # The cheap models of bertfit.baseline on the same split, for the report: {name: {"metrics", "seconds"}}, the
    # metrics without their per-class tables. A failure costs the comparison, never the trained model.
    from .baseline import run_baselines

    try:
        results = run_baselines(
            train_ds,
            val_ds,
            model_name_or_path=config.model_name_or_path,
            positive_label=positive,
            max_length=max_length,
            batch_size=config.eval_batch_size,
        )
    except (BertfitError, ValueError, MemoryError) as err:
        logger.warning("the baselines could not be trained (%s); the model is saved without them", err)
        return {}
    return {
        name: {
            "metrics": {k: v for k, v in result["metrics"].items() if isinstance(v, (float, str))},
            "seconds": round(result["seconds"], 1),
        }
        for name, result in results.items()
    }


def is_main_process() -> bool:
    """Whether this process writes outputs: rank 0 of a run started by torchrun or accelerate, or a lone process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _prepare_data(config: TrainConfig, train_data, validation_data) -> tuple[TextDataset, TextDataset, str]:
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


def _positive_label(config: TrainConfig, train_ds: TextDataset, labels: list[str]) -> str | None:
    if len(labels) != 2 or train_ds.multi_label:
        if config.positive_label is not None:
            logger.warning(
                "ignoring positive_label %r: the task has %d %s, not 2 classes",
                config.positive_label,
                len(labels),
                "labels per text (multi-label)" if train_ds.multi_label else "classes",
            )
        return None
    if config.positive_label is None:
        positive = minority_label(train_ds.labels)
        logger.info(
            "positive class for precision/recall/F1: %r (the minority class; set --positive-label to change)", positive
        )
        return positive
    if config.positive_label not in labels:
        raise ConfigError(
            f"positive_label {config.positive_label!r} is not a label of the training data {labels}; "
            "pass --positive-label with one of them"
        )
    return config.positive_label


def choose_max_length(lengths: Sequence[int], limit: int, long_text: str = "truncate") -> int:
    """The 99th percentile of the token counts ``lengths`` (of texts cut at ``limit``), rounded up to a multiple of 8,
    at most ``limit`` (and at most ``CHUNK_MAX_LENGTH`` when ``long_text`` is "chunk": the window size); logs the
    choice and how many texts it truncates or splits."""
    lengths = np.asarray(lengths, dtype=np.int64)
    cap = limit if long_text == "truncate" else min(limit, CHUNK_MAX_LENGTH)
    chosen = suggest_max_length(lengths, cap)
    longer = int((lengths > chosen).sum())
    logger.info(
        "max_length %d: the 99th percentile of training token counts (%.0f), capped at %s; %d training texts "
        "(%.1f%%) are %s (set --max-length to change)",
        chosen,
        float(np.percentile(lengths, 99)),
        f"the model limit {limit}" if cap == limit else f"{cap} with long_text chunk",
        longer,
        100 * longer / len(lengths),
        "truncated" if long_text == "truncate" else "split into windows",
    )
    return chosen


def _freeze_token_embeddings(model) -> None:
    # The token-embedding table gets a dense (vocab x hidden) gradient although a batch touches a few hundred rows,
    # and AdamW then updates every row: for MiniLM that is 11.7M of 22.7M weights, about a third of a CPU step.
    table = model.get_input_embeddings().weight
    table.requires_grad_(False)
    logger.info(
        "token embeddings frozen (%.1fM of %.1fM weights): faster steps (--train-embeddings trains them)",
        table.numel() / 1e6,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )


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
        "long_text chunk: windows of %d tokens overlapping by %d, at most %s per training text; a text's logits are "
        "the %s of its windows'",
        max_length,
        windowing.stride,
        config.max_windows or "all",
        config.aggregate,
    )
    return windowing


def _targets(dataset: TextDataset, label2id: dict[str, int]) -> list:
    if dataset.multi_label:  # float multi-hot rows: transformers' multi-label loss is BCE-with-logits on them
        return multi_hot(dataset.labels, list(label2id)).astype(np.float32).tolist()
    return [label2id[label] for label in dataset.labels]


def _window_features(
    tokenizer,
    dataset: TextDataset,
    label2id: dict[str, int],
    windowing: Windowing,
    max_windows: int = 0,
    cache_dir: Path | None = None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    # Each window labelled with its text's label, and the text index of each window.
    encoded, text_index = encode_windows(tokenizer, dataset.texts, windowing, max_windows, cache_dir)
    targets = _targets(dataset, label2id)
    features = [
        {**{k: ids[i] for k, ids in encoded.items()}, "labels": targets[text]} for i, text in enumerate(text_index)
    ]
    return features, text_index


def _encode(tokenizer, dataset: TextDataset, label2id: dict[str, int], max_length: int, encoded) -> list[dict]:
    # encoded: the texts tokenized with a cut >= max_length, whose longer rows are redone at max_length.
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    long_rows = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > max_length]
    if long_rows:
        redone = tokenizer([dataset.texts[i] for i in long_rows], truncation=True, max_length=max_length)
        for k in keys:
            for j, i in enumerate(long_rows):
                encoded[k][i] = redone[k][j]
    targets = _targets(dataset, label2id)
    return [{**{k: encoded[k][i] for k in keys}, "labels": target} for i, target in enumerate(targets)]


class _TokenCounter:
    """Counts real and padded tokens of the training forward passes (a forward pre-hook on the model)."""

    def __init__(self, model):
        self.real = self.total = 0
        self.handle = model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if module.training and mask is not None:
            self.real += mask.sum()  # stays a tensor: no host sync per step
            self.total += mask.numel()

    @property
    def real_tokens(self) -> int:
        return int(self.real)

    @property
    def padding_share(self) -> float:
        return 1 - int(self.real) / self.total if self.total else 0.0


def _training_arguments(
    config: TrainConfig, precision: str, device: str, workdir: str, report_to: str
) -> TrainingArguments:
    # The one place where TrainConfig maps onto TrainingArguments, so that its 100+ fields never become our API.
    return TrainingArguments(
        output_dir=workdir,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        eval_strategy=config.eval_strategy,
        eval_steps=config.eval_steps,
        logging_strategy=config.eval_strategy,
        logging_steps=config.eval_steps or 500,
        save_strategy="no",  # the best state is kept in memory by _Monitor
        logging_nan_inf_filter=False,  # a NaN/inf loss must reach _Monitor, which stops the run
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        torch_compile=config.torch_compile,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        report_to=report_to,
        # One label per text: the model's mean loss is right as it is, and DDP averages the gradients. With this on,
        # transformers multiplies the loss by the process count for models whose forward takes **kwargs but ignores
        # num_items_in_batch (BERT's does), doubling the reported loss and the gradients on 2 processes.
        average_tokens_across_devices=False,
        disable_tqdm=not progress.enabled(),  # a terminal, and no --quiet
    )


def class_weight_vector(
    class_weights: str | dict[str, float], train_labels: list[str] | list[tuple[str, ...]], labels: list[str]
) -> list[float] | None:
    """Loss weights in label id order: None for 'none'; n_texts / (n_classes x count) for 'balanced' (as
    scikit-learn's ``class_weight="balanced"``); the given weights (1 for labels left out) for a mapping.

    For multi-label rows (label sets) the weights are each label's ``pos_weight`` in its binary cross-entropy:
    'balanced' gives negatives / positives of the label, capped at :data:`~bertfit.config.MAX_POS_WEIGHT`.

    Raises:
        ConfigError: The mapping names labels that the training data lacks.

    >>> class_weight_vector("balanced", ["a", "a", "a", "b"], ["a", "b"])
    [0.6666666666666666, 2.0]
    >>> class_weight_vector("balanced", [("a",), ("a", "b"), ("a",), ()], ["a", "b"])
    [0.3333333333333333, 3.0]
    """
    if class_weights == "none":
        return None
    multi_label = bool(train_labels) and isinstance(train_labels[0], tuple)
    if class_weights == "balanced" and multi_label:
        counts = Counter(label for row in train_labels for label in row)
        n = len(train_labels)
        return [min((n - counts[label]) / counts[label], MAX_POS_WEIGHT) for label in labels]
    if class_weights == "balanced":
        counts = Counter(train_labels)
        return [len(train_labels) / (len(labels) * counts[label]) for label in labels]
    unknown = sorted(set(class_weights) - set(labels))
    if unknown:
        raise ConfigError(
            f"class_weights name labels {unknown} that the training data lacks (its labels: {labels}); "
            "fix the names in --class-weights"
        )
    return [class_weights.get(label, 1.0) for label in labels]


def init_prior_bias(
    model, train_labels: list[tuple[str, ...]], labels: list[str], pos_weight: list[float] | None = None
) -> None:
    """Start a multi-label head's output bias at each label's log-odds in the training data (weighted by its
    ``pos_weight``), so that the untrained model already predicts the label frequencies.

    Why: from a zero bias every sigmoid starts at 0.5 while most labels are rare, and the first thing binary
    cross-entropy learns is to push every output down. At fine-tuning learning rates the bias moves too slowly for
    that, so the encoder does it instead: measured on 6,000 GoEmotions texts (28 labels, lr 1e-4, 2 epochs), it
    collapsed to the same output for every text. The prior initialization of Lin et al. (2017, focal loss) avoids it.
    The bias is the last linear layer of the head with one output per label; a head without one is left as it is.
    """
    heads = [
        module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and module.out_features == len(labels)
        and module.bias is not None
        and not name.startswith(model.base_model_prefix)
    ]
    if not heads:
        logger.info("no linear output layer with a bias found in the classification head; its bias is left as is")
        return
    counts = Counter(label for row in train_labels for label in row)
    share = np.clip([counts[label] / len(train_labels) for label in labels], 1e-4, 1 - 1e-4)
    weight = np.asarray(pos_weight if pos_weight is not None else np.ones(len(labels)))
    with torch.no_grad():
        heads[-1].bias.copy_(torch.as_tensor(np.log(weight * share / (1 - share)), dtype=heads[-1].bias.dtype))


class _BertfitTrainer(Trainer):
    """The Trainer, with a class-weighted cross-entropy when ``class_weights`` is given (for a multi-label model: a
    binary cross-entropy with ``class_weights`` as the positive texts' weight per label), token-budget batches
    when ``max_tokens_per_batch`` is, and evaluation in dataset order."""

    def __init__(
        self, *args, class_weights: list[float] | None = None, max_tokens_per_batch: int | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        if class_weights is not None:
            logger.info("class weights in the loss: %s", [round(w, 4) for w in class_weights])
        self.max_tokens_per_batch = max_tokens_per_batch

    def get_train_dataloader(self) -> DataLoader:
        if self.max_tokens_per_batch is None:
            return super().get_train_dataloader()  # fixed batch size, length-grouped
        lengths = [len(f["input_ids"]) for f in self.train_dataset]
        sampler = TokenBudgetBatchSampler(lengths, self.max_tokens_per_batch, seed=self.args.seed)
        logger.info(
            "token-budget batches: at most %d padded tokens per step, %d batches per epoch (%.1f texts on average, "
            "--batch-size is not used)",
            self.max_tokens_per_batch,
            len(sampler),
            len(lengths) / len(sampler),
        )
        loader = DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def _get_eval_sampler(self, eval_dataset):
        # Keep the eval dataset's order (sorted by length: little padding), so that compute_metrics can map its rows
        # to texts. With group_by_length the stock Trainer shuffles evaluation into random length groups too.
        if eval_dataset is None or self.args.world_size > 1:  # distributed: accelerate shards it in order
            return None
        return torch.utils.data.SequentialSampler(eval_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.class_weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        logits = outputs.logits.float()  # (batch, n_labels); fp32 for the loss under bf16 autocast
        weights = self.class_weights.to(logits.device)
        if model.config.problem_type == MULTI_LABEL_PROBLEM:  # labels: (batch, n_labels) multi-hot floats
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, inputs["labels"].float(), pos_weight=weights
            )
        else:
            loss = torch.nn.functional.cross_entropy(logits, inputs["labels"], weight=weights)
        return (loss, outputs) if return_outputs else loss


def _tune_threshold(
    config, info, y_true: list[str], probs: np.ndarray, argmax_labels: list[str], labels: list[str], positive: str
) -> None:
    # Binary tasks: the threshold on P(positive) that is best for config.threshold_metric on validation; the
    # argmax (0.5) scores are kept beside it so the report can show what tuning changed.
    scores = probs[:, labels.index(positive)]  # (n_validation,)
    threshold, value = tune_threshold([label == positive for label in y_true], scores, config.threshold_metric)
    at_half = compute_metrics(y_true, argmax_labels, labels, positive)
    info["threshold"] = threshold
    info["threshold_tuning"] = {
        "metric": config.threshold_metric,
        "value": value,
        "at_0.5": {k: at_half[k] for k in ("accuracy", "macro_f1", "precision", "recall", "f1", "specificity")},
    }
    logger.info(
        "decision threshold %.4f on P(%s), tuned on validation for %s (%.4f); at 0.5: F1 %.4f, precision %.4f, "
        "recall %.4f (set --threshold-metric none to keep 0.5)",
        threshold,
        positive,
        config.threshold_metric,
        value,
        at_half["f1"],
        at_half["precision"],
        at_half["recall"],
    )


def _tune_thresholds(
    config, info, y_true: list[tuple[str, ...]], probs: np.ndarray, untuned: list[list[str]], labels: list[str]
) -> None:
    # Multi-label tasks: one threshold per label, best for config.threshold_metric on that label's validation
    # probabilities; the scores at 0.5 are kept beside them, as for the binary threshold.
    truth = multi_hot(y_true, labels)  # (n_validation, n_labels)
    thresholds, values = tune_thresholds(truth, probs, labels, config.threshold_metric)
    at_half = multi_label_metrics(truth, multi_hot(untuned, labels), labels)
    info["thresholds"] = thresholds
    info["threshold_tuning"] = {
        "metric": config.threshold_metric,
        "values": values,
        "at_0.5": {k: at_half[k] for k in ("accuracy", "micro_f1", "macro_f1", "samples_f1", "hamming_loss")},
    }
    untouched = [label for label in labels if label not in values]
    logger.info(
        "decision thresholds per label tuned on validation for %s: %.3f to %.3f%s; at 0.5: micro-F1 %.4f, macro-F1 "
        "%.4f (set --threshold-metric none to keep 0.5)",
        config.threshold_metric,
        min(thresholds.values()),
        max(thresholds.values()),
        f"; {len(untouched)} label(s) with fewer than {MIN_POSITIVES_TO_TUNE} positive validation texts keep 0.5: "
        f"{untouched}"
        if untouched
        else "",
        at_half["micro_f1"],
        at_half["macro_f1"],
    )


def _divergence_message(config: TrainConfig, monitor: _Monitor, saved_to: str | None) -> str:
    where = f"epoch {monitor.diverged_at['epoch']:g} (step {monitor.diverged_at['step']})"
    kept = (
        f"the best state before it (epoch {monitor.best_row['epoch']:g}, {config.metric_for_best_model} "
        f"{monitor.best_row['_value']:.4f}) was kept" + (f" and saved to {saved_to}" if saved_to else "")
        if monitor.best_row
        else "no evaluation had finished, so there is no state to keep"
    )
    return (
        f"the training loss became NaN or infinite in {where}; {kept}. Train again with a lower learning rate, "
        f"e.g. --lr {config.learning_rate / 3:.1e}" + (", or --precision fp32" if config.precision != "fp32" else "")
    )


def _trainer_metrics(
    labels: list[str],
    positive: str | None,
    text_labels: list,
    window_texts: np.ndarray,
    aggregate: str,
    multi_label: bool = False,
):
    """The Trainer's compute_metrics: the scalar metrics of :func:`compute_metrics` on the argmax labels of the
    validation texts, or for a multi-label model of :func:`multi_label_metrics` at probability 0.5 (logit 0) per label.
    A text's logits aggregate those of its windows (``window_texts[i]`` is the text of window i of the eval dataset,
    in its order). The Trainer's eval loss stays a mean over windows."""

    def metrics(prediction) -> dict[str, float]:
        # prediction.predictions: (n_windows, n_labels) -> logits: (n_validation, n_labels)
        logits = aggregate_logits(prediction.predictions, window_texts, len(text_labels), aggregate)
        if multi_label:
            scores = multi_label_metrics(multi_hot(text_labels, labels).astype(bool), logits >= 0, labels)
        else:
            pred = [labels[i] for i in np.argmax(logits, axis=-1)]
            scores = compute_metrics(text_labels, pred, labels, positive)
        return {k: v for k, v in scores.items() if isinstance(v, float)}

    return metrics


def _set_progress_callbacks(trainer: Trainer) -> None:
    # The stock progress callbacks also print every log dict; _Monitor prints the per-epoch table instead.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if not trainer.args.disable_tqdm:
        trainer.add_callback(_QuietProgress())


class _QuietProgress(ProgressCallback):
    """The stock progress bars without the stock printing of every log dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


class _Monitor(TrainerCallback):
    """Builds the per-evaluation table, keeps the best state in memory and stops early on a plateau."""

    def __init__(self, config: TrainConfig):
        self.metric = config.metric_for_best_model
        self.patience = config.early_stopping_patience
        self.rows: list[dict[str, Any]] = []
        self.best_state: dict | None = None
        self.best_row: dict[str, Any] | None = None
        self._bad_evals = 0
        self._train_loss: float | None = None
        self._since = time.perf_counter()
        self.main_process = True
        self.diverged_at: dict[str, float] | None = None
        self.schedule: dict[str, int] = {}
        self.log_history: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self._since = time.perf_counter()
        self.main_process = state.is_world_process_zero
        self.schedule = {
            "world_size": args.world_size,
            "per_device_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "effective_batch_size": args.per_device_train_batch_size
            * args.world_size
            * args.gradient_accumulation_steps,
            "optimizer_steps": state.max_steps,
            "warmup_steps": args.get_warmup_steps(state.max_steps),
        }
        if self.main_process:
            logger.info(
                "effective batch size %(effective_batch_size)d = %(per_device_batch_size)d per process x "
                "%(world_size)d process(es) x %(gradient_accumulation_steps)d accumulation step(s); "
                "%(optimizer_steps)d optimizer steps, the first %(warmup_steps)d warming up",
                self.schedule,
            )

    def on_train_end(self, args, state, control, **kwargs):
        self.log_history = list(state.log_history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._train_loss = float(logs["loss"])
            if not math.isfinite(self._train_loss) and self.diverged_at is None:
                # The weights are ruined: stop, skip the evaluation of this state, keep the best one so far.
                self.diverged_at = {"epoch": round(float(state.epoch or 0), 2), "step": state.global_step}
                control.should_training_stop = True
                control.should_evaluate = False

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        now = time.perf_counter()
        row = {
            "epoch": round(float(state.epoch or 0), 2),
            "step": state.global_step,
            "train_loss": self._train_loss,
            "val_loss": metrics.get("eval_loss"),
            **{
                k[len("eval_") :]: v
                for k, v in metrics.items()
                if k[len("eval_") :]
                in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "f1", "hamming_loss")
            },
            "seconds": round(now - self._since, 1),
        }
        self._since = now
        self.rows.append(row)
        if len(self.rows) == 1 and self.main_process:
            logger.info(format_history([row]).splitlines()[0])
        if self.main_process:
            logger.info(_format_row(row, _history_columns([row])))
        value = row["val_loss"] if self.metric == "loss" else row.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        best = None if self.best_row is None else self.best_row["_value"]
        if best is None or (value < best if self.metric == "loss" else value > best):
            self.best_row = {**row, "_value": value}
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            self._bad_evals = 0
        else:
            self._bad_evals += 1
            if self.patience and self._bad_evals >= self.patience:
                logger.info("stopping early: %s has not improved for %d evaluations", self.metric, self._bad_evals)
                control.should_training_stop = True


def format_history(rows: list[dict[str, Any]], best_epoch: float | None = None) -> str:
    """The per-evaluation table as fixed-width text: epoch, train loss, val loss, accuracy (multi-label runs:
    micro-F1), macro-F1, seconds.

    The row of ``best_epoch`` is marked with ``*``.
    """
    columns = _history_columns(rows)
    header = "".join(f"{name:>12}" for name in columns) + "\n"
    return header + "".join(_format_row(row, columns, row["epoch"] == best_epoch) + "\n" for row in rows)


def _history_columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    multi_label = any("hamming_loss" in row for row in rows)  # only multi-label evaluations report it
    return _MULTI_LABEL_HISTORY_COLUMNS if multi_label else _HISTORY_COLUMNS


def _format_row(row: dict[str, Any], columns: tuple[str, ...], best: bool = False) -> str:
    cells = []
    for name in columns:
        value = row.get(name)
        if value is None:
            cells.append(f"{'-':>12}")
        elif name == "epoch":
            cells.append(f"{value:>11g}" + ("*" if best else " "))
        elif name == "seconds":
            cells.append(f"{value:>12.1f}")
        else:
            cells.append(f"{value:>12.4f}")
    return "".join(cells)


def _describe(dataset: TextDataset) -> dict[str, Any]:
    return {
        "source": dataset.source,
        "rows": len(dataset),
        "fingerprint": dataset.fingerprint(),
        "label_counts": dataset.label_counts(),
    }
