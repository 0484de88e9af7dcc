"""train(config, data) -> TextClassifier. The only module that touches transformers.Trainer.

The Trainer is the engine; around it bertfit adds what the tutorials lack: a stratified split, a max_length taken
from the data, long texts truncated or split into overlapping windows (scored per text: see chunking.py), dynamic
padding over length-grouped batches (never padding every text to max_length), bf16 autocast where the hardware has
it, the best epoch kept in memory and restored at the end (no optimizer-sized checkpoints on disk), a per-epoch
table, and a loud warning when the model collapsed onto one class.
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
from .chunking import CHUNK_MAX_LENGTH, Windowing, aggregate_logits, encode_windows, resolve_stride
from .config import TrainConfig
from .data import TextDataset, check_validation, load_data, sorted_labels, train_val_split
from .evaluate import collapse_warning, compute_metrics, minority_label, tune_threshold
from .exceptions import ConfigError, DataError, TrainingError
from .explore import suggest_max_length
from .model import (
    DEFAULT_MODEL_NAME,
    TextClassifier,
    check_output_dir,
    load_sequence_classifier,
    load_tokenizer,
    model_max_length,
    resolve_model,
)
from .report import prediction_records
from .track import Tracker

__all__ = [
    "train",
    "choose_max_length",
    "class_weight_vector",
    "resolve_precision",
    "format_history",
    "is_main_process",
]

logger = logging.getLogger(__name__)

_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds")


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
        train_data: Labelled texts, or a file to read with ``config.text_column`` / ``config.label_column``.
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
    if config.output_dir:
        # Every rank of a distributed run checks before training; only rank 0 writes, after training.
        check_output_dir(config.output_dir, config.overwrite)  # fail before minutes of training, not after
    tracker = Tracker(config, main_process=is_main_process())
    train_ds, val_ds, val_from = _prepare_data(config, train_data, validation_data)
    labels = sorted_labels(train_ds.labels)
    positive = _positive_label(config, train_ds, labels)
    class_weights = class_weight_vector(config.class_weights, train_ds.labels, labels)
    precision, device = resolve_precision(config.precision)
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
    )
    # Tokenize the training texts once: their lengths choose max_length, and only the texts longer than that are
    # tokenized again, cut shorter (truncate) or split into windows (chunk).
    cut = config.max_length or model_max_length(tokenizer, model.config)
    train_encoded = progress.tokenize(tokenizer, train_ds.texts, truncation=True, max_length=cut)
    lengths = [len(ids) for ids in train_encoded["input_ids"]]
    max_length = config.max_length or choose_max_length(lengths, cut, config.long_text)
    windowing = _windowing(config, max_length)
    if windowing.mode == "chunk":
        train_features, _ = _window_features(tokenizer, train_ds, label2id, windowing, config.max_windows)
    else:
        train_features = _encode(tokenizer, train_ds, label2id, max_length, train_encoded)
    # Sort the validation windows by length (eval batches then have little padding), keeping val_texts[i], the
    # validation text of window i, aligned: the metrics are per text.
    val_features, val_texts = _window_features(tokenizer, val_ds, label2id, windowing)
    order = np.argsort([len(f["input_ids"]) for f in val_features], kind="stable")
    val_features, val_texts = [val_features[i] for i in order], val_texts[order]

    monitor = _Monitor(config)
    counter = _TokenCounter(model)
    start = time.perf_counter()
    tracker.start()
    with tracker.closing_on_error(), tempfile.TemporaryDirectory(prefix="bertfit-") as workdir:
        trainer = _BertfitTrainer(
            class_weights=class_weights,
            model=model,
            args=_training_arguments(config, precision, device, workdir, tracker.report_to),
            train_dataset=train_features,
            eval_dataset=val_features,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_trainer_metrics(labels, positive, val_ds.labels, val_texts, windowing.aggregate),
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
    argmax_labels = [labels[k] for k in np.argmax(probs, axis=1)]
    if positive is not None and config.threshold_metric != "none":
        _tune_threshold(config, info, val_ds.labels, probs, argmax_labels, labels, positive)
    # Kept with the classifier: save_pretrained writes them and report.html from them.
    classifier.validation_predictions_ = prediction_records(
        val_ds.texts, val_ds.labels, probs, labels, classifier.decide(probs)
    )
    predictions = [record["label"] for record in classifier.validation_predictions_]
    classifier.metrics_ = compute_metrics(val_ds.labels, predictions, labels, positive)
    # Collapse is a property of the model, not of a threshold tuned to split its near-constant scores: use argmax.
    warning = collapse_warning(val_ds.labels, argmax_labels)
    if warning:
        logger.warning(warning)
        info["warnings"].append(warning)
    if monitor.diverged_at is not None:
        info["warnings"].append(_divergence_message(config, monitor, saved_to=config.output_dir))
    if config.output_dir:
        classifier.save_pretrained(config.output_dir, overwrite=config.overwrite)
    tracker.finish(classifier.metrics_, config.output_dir)
    if monitor.diverged_at is not None:
        raise TrainingError(info["warnings"][-1], saved_to=config.output_dir)
    return classifier


def is_main_process() -> bool:
    """Whether this process writes outputs: rank 0 of a run started by torchrun or accelerate, or a lone process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def _prepare_data(config: TrainConfig, train_data, validation_data) -> tuple[TextDataset, TextDataset, str]:
    if not isinstance(train_data, TextDataset):
        train_data = load_data(train_data, config.text_column, config.label_column)
    if len(set(train_data.labels)) < 2:
        raise DataError(
            f"training data {train_data.source} has a single class {train_data.classes}; a classifier needs at least "
            "two classes (check --label-column)"
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
        validation_data = load_data(validation_data, config.text_column, config.label_column)
    check_validation(train_data, validation_data)
    return train_data, validation_data, "file"


def _positive_label(config: TrainConfig, train_ds: TextDataset, labels: list[str]) -> str | None:
    if len(labels) != 2:
        if config.positive_label is not None:
            logger.warning(
                "ignoring positive_label %r: the task has %d classes, not 2", config.positive_label, len(labels)
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


def resolve_precision(requested: str) -> tuple[str, str]:
    """The training arithmetic and device: ``auto`` picks bf16 on CPUs with AVX512-BF16/AMX and on bf16 GPUs,
    fp16 on older GPUs, fp32 elsewhere.

    Returns:
        ``(precision, device)``, e.g. ``("bf16", "cpu")``.

    Raises:
        ConfigError: fp16 asked for without a CUDA GPU.
    """
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
    else:
        bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if requested == "auto":
        chosen = "bf16" if bf16 else ("fp16" if device == "cuda" else "fp32")
        logger.info(
            "precision: %s on %s (weights and optimizer state stay fp32; --precision overrides)", chosen, device
        )
        return chosen, device
    if requested == "fp16" and device == "cpu":
        raise ConfigError("precision fp16 needs a CUDA GPU and none is available; use --precision bf16 or fp32")
    if requested == "bf16" and not bf16:
        logger.warning("precision bf16 was asked for but this %s has no native bf16 support; it will be slow", device)
    return requested, device


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


def _windowing(config: TrainConfig, max_length: int) -> Windowing:
    if config.long_text == "truncate":
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


def _window_features(
    tokenizer, dataset: TextDataset, label2id: dict[str, int], windowing: Windowing, max_windows: int = 0
) -> tuple[list[dict[str, Any]], np.ndarray]:
    # Each window labelled with its text's label, and the text index of each window.
    encoded, text_index = encode_windows(tokenizer, dataset.texts, windowing, max_windows)
    features = [
        {**{k: ids[i] for k, ids in encoded.items()}, "labels": label2id[dataset.labels[text]]}
        for i, text in enumerate(text_index)
    ]
    return features, text_index


def _encode(
    tokenizer, dataset: TextDataset, label2id: dict[str, int], max_length: int, encoded=None
) -> list[dict[str, Any]]:
    # encoded: the texts already tokenized with a cut >= max_length, whose longer rows are redone at max_length.
    if encoded is None:
        encoded = progress.tokenize(tokenizer, dataset.texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    long_rows = [i for i, ids in enumerate(encoded["input_ids"]) if len(ids) > max_length]
    if long_rows:
        redone = tokenizer([dataset.texts[i] for i in long_rows], truncation=True, max_length=max_length)
        for k in keys:
            for j, i in enumerate(long_rows):
                encoded[k][i] = redone[k][j]
    return [{**{k: encoded[k][i] for k in keys}, "labels": label2id[label]} for i, label in enumerate(dataset.labels)]


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
    class_weights: str | dict[str, float], train_labels: list[str], labels: list[str]
) -> list[float] | None:
    """Loss weights in label id order: None for 'none'; n_texts / (n_classes x count) for 'balanced' (as
    scikit-learn's ``class_weight="balanced"``); the given weights (1 for labels left out) for a mapping.

    Raises:
        ConfigError: The mapping names labels that the training data lacks.

    >>> class_weight_vector("balanced", ["a", "a", "a", "b"], ["a", "b"])
    [0.6666666666666666, 2.0]
    """
    if class_weights == "none":
        return None
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


class _BertfitTrainer(Trainer):
    """The Trainer, with a class-weighted cross-entropy when ``class_weights`` is given; evaluates in dataset order."""

    def __init__(self, *args, class_weights: list[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        if class_weights is not None:
            logger.info("class weights in the loss: %s", [round(w, 4) for w in class_weights])

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
        loss = torch.nn.functional.cross_entropy(logits, inputs["labels"], weight=self.class_weights.to(logits.device))
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
    labels: list[str], positive: str | None, text_labels: list[str], window_texts: np.ndarray, aggregate: str
):
    """The Trainer's compute_metrics: the scalar metrics of :func:`compute_metrics` on the argmax labels of the
    validation texts, whose logits aggregate those of their windows (``window_texts[i]`` is the text of window i of
    the eval dataset, in its order). The Trainer's eval loss stays a mean over windows."""

    def metrics(prediction) -> dict[str, float]:
        # prediction.predictions: (n_windows, n_labels) -> logits: (n_validation, n_labels)
        logits = aggregate_logits(prediction.predictions, window_texts, len(text_labels), aggregate)
        pred = [labels[i] for i in np.argmax(logits, axis=-1)]
        return {k: v for k, v in compute_metrics(text_labels, pred, labels, positive).items() if isinstance(v, float)}

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
                if k[len("eval_") :] in ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "f1")
            },
            "seconds": round(now - self._since, 1),
        }
        self._since = now
        self.rows.append(row)
        if len(self.rows) == 1 and self.main_process:
            logger.info(format_history([]).rstrip("\n"))
        if self.main_process:
            logger.info(_format_row(row))
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
    """The per-evaluation table as fixed-width text: epoch, train loss, val loss, accuracy, macro-F1, seconds.

    The row of ``best_epoch`` is marked with ``*``.
    """
    header = "".join(f"{name:>12}" for name in _HISTORY_COLUMNS) + "\n"
    return header + "".join(_format_row(row, row["epoch"] == best_epoch) + "\n" for row in rows)


def _format_row(row: dict[str, Any], best: bool = False) -> str:
    cells = []
    for name in _HISTORY_COLUMNS:
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
