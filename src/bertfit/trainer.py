"""The training stage: fit a sequence classifier on training windows, evaluate every epoch, stop at the best state.

The engine is the Hugging Face ``Trainer`` (this is the only module that touches it), with what the tutorials lack:
dynamic padding over length-grouped batches (or token-budget batches), bf16 autocast where the hardware has it, a
class-weighted loss, per-text metrics of windowed validation texts, the best evaluation's weights kept in memory and
restored at the end (no optimizer-sized checkpoints on disk), a per-epoch table, early stopping, and a stop on a NaN
or infinite loss.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import (
    DataCollatorWithPadding,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from . import progress
from .backbone import MULTI_LABEL_PROBLEM
from .batching import TokenBudgetBatchSampler
from .config import MAX_POS_WEIGHT, TrainConfig
from .data import multi_hot
from .exceptions import ConfigError
from .features import aggregate_logits
from .hardware import Precision
from .metrics import compute_metrics, multi_label_metrics

__all__ = [
    "TrainResult",
    "run_training",
    "epoch_metrics",
    "class_weight_vector",
    "init_prior_bias",
    "freeze_token_embeddings",
    "format_history",
    "is_main_process",
]

logger = logging.getLogger(__name__)

_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "accuracy", "macro_f1", "seconds")
# Multi-label runs show micro-F1 where single-label runs show accuracy (subset accuracy is a harsh, low number).
_MULTI_LABEL_HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "micro_f1", "macro_f1", "seconds")
_ROW_METRICS = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "mcc", "f1", "hamming_loss")


@dataclass
class TrainResult:
    """What the training stage hands on: the model holds the best evaluated state (when there was one)."""

    history: list[dict[str, Any]]
    best_row: dict[str, Any] | None
    schedule: dict[str, int]
    log_history: list[dict[str, Any]]
    seconds: float
    real_tokens: int
    padding_share: float
    main_process: bool = True
    diverged_at: dict[str, float] | None = None
    warnings: list[str] = field(default_factory=list)


def run_training(
    model,
    tokenizer,
    config: TrainConfig,
    precision: Precision,
    train_rows: list[dict[str, Any]],
    val_rows: list[dict[str, Any]],
    metrics_fn: Callable[[np.ndarray], dict[str, float]],
    class_weights: list[float] | None = None,
    tracker=None,
) -> TrainResult:
    """Train ``model`` on ``train_rows`` (one dict of inputs and ``labels`` per window), evaluate on ``val_rows`` after
    every epoch (or every ``config.eval_steps``) and restore the best state by ``config.metric_for_best_model``.

    ``metrics_fn`` maps the validation logits, shape ``(len(val_rows), n_labels)`` in ``val_rows`` order, to scalar
    metrics per text (see :func:`epoch_metrics`).
    """
    monitor = _Monitor(config, multi_label=model.config.problem_type == MULTI_LABEL_PROBLEM)
    counter = _TokenCounter(model)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bertfit-") as workdir:
        trainer = _BertfitTrainer(
            class_weights=class_weights,
            max_tokens_per_batch=config.max_tokens_per_batch,
            model=model,
            args=_training_arguments(config, precision, workdir, tracker.report_to if tracker else "none"),
            train_dataset=train_rows,
            eval_dataset=val_rows,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=lambda prediction: metrics_fn(prediction.predictions),
            callbacks=[monitor],
        )
        _set_progress_callbacks(trainer)
        if tracker is not None:
            tracker.attach(trainer.callback_handler.callbacks)
        trainer.train()
    seconds = time.perf_counter() - start
    counter.handle.remove()
    if monitor.best_state is not None:
        model.load_state_dict(monitor.best_state)
    logger.info(
        "training took %.1f s, %.0f real tokens/s; padding was %.1f%% of the tokens in training batches",
        seconds,
        counter.real_tokens / seconds,
        100 * counter.padding_share,
    )
    return TrainResult(
        history=monitor.rows,
        best_row=monitor.best_row,
        schedule=monitor.schedule,
        log_history=monitor.log_history,
        seconds=seconds,
        real_tokens=counter.real_tokens,
        padding_share=counter.padding_share,
        main_process=monitor.main_process,
        diverged_at=monitor.diverged_at,
    )


def divergence_message(config: TrainConfig, result: TrainResult, saved_to: str | None) -> str:
    """What to say when the training loss became NaN or infinite: where, what was kept, what to try."""
    where = f"epoch {result.diverged_at['epoch']:g} (step {result.diverged_at['step']})"
    best = result.best_row
    kept = (
        f"the best state before it (epoch {best['epoch']:g}, {config.metric_for_best_model} {best['_value']:.4f}) "
        "was kept" + (f" and saved to {saved_to}" if saved_to else "")
        if best
        else "no evaluation had finished, so there is no state to keep"
    )
    return (
        f"the training loss became NaN or infinite in {where}; {kept}. Train again with a lower learning rate, "
        f"e.g. --lr {config.learning_rate / 3:.1e}" + (", or --precision fp32" if config.precision != "fp32" else "")
    )


def epoch_metrics(
    labels: list[str],
    positive: str | None,
    text_labels: list,
    window_texts: np.ndarray,
    aggregate: str,
    multi_label: bool = False,
) -> Callable[[np.ndarray], dict[str, float]]:
    """The per-evaluation metrics: the scalar metrics of :func:`~bertfit.evaluate.compute_metrics` on the argmax
    labels of the validation texts, or for a multi-label model of :func:`~bertfit.evaluate.multi_label_metrics` at
    probability 0.5 (logit 0) per label. A text's logits aggregate those of its windows (``window_texts[i]`` is the
    text of window i of the evaluation, in its order); the evaluation loss stays a mean over windows."""

    def metrics(window_logits: np.ndarray) -> dict[str, float]:
        # window_logits: (n_windows, n_labels) -> logits: (n_validation, n_labels)
        logits = aggregate_logits(window_logits, window_texts, len(text_labels), aggregate)
        if multi_label:
            scores = multi_label_metrics(multi_hot(text_labels, labels).astype(bool), logits >= 0, labels)
        else:
            pred = [labels[i] for i in np.argmax(logits, axis=-1)]
            scores = compute_metrics(text_labels, pred, labels, positive)
        return {k: v for k, v in scores.items() if isinstance(v, float)}

    return metrics


def is_main_process() -> bool:
    """Whether this process writes outputs: rank 0 of a run started by torchrun or accelerate, or a lone process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


# -- the model before training -------------------------------------------------------------------------------------


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


def freeze_token_embeddings(model) -> None:
    """Keep the token-embedding table as loaded: no gradient, no optimizer update.

    The table gets a dense (vocab x hidden) gradient although a batch touches a few hundred rows, and AdamW then
    updates every row: for MiniLM that is 11.7M of 22.7M weights, about a third of a CPU step.
    """
    table = model.get_input_embeddings().weight
    table.requires_grad_(False)
    logger.info(
        "token embeddings frozen (%.1fM of %.1fM weights): faster steps (--train-embeddings trains them)",
        table.numel() / 1e6,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )


# -- the Trainer and its callbacks ---------------------------------------------------------------------------------


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


def _training_arguments(config: TrainConfig, precision: Precision, workdir: str, report_to: str) -> TrainingArguments:
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
        bf16=precision.name == "bf16",
        fp16=precision.name == "fp16",
        use_cpu=precision.device == "cpu",
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


class _Monitor(TrainerCallback):
    """Builds the per-evaluation table, keeps the best state in memory and stops early on a plateau."""

    def __init__(self, config: TrainConfig, multi_label: bool = False):
        self.multi_label = multi_label
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
            **{k[len("eval_") :]: v for k, v in metrics.items() if k[len("eval_") :] in _ROW_METRICS},
            "seconds": round(now - self._since, 1),
        }
        self._since = now
        self.rows.append(row)
        columns = _MULTI_LABEL_HISTORY_COLUMNS if self.multi_label else _HISTORY_COLUMNS
        if len(self.rows) == 1 and self.main_process:
            logger.info("".join(f"{name:>12}" for name in columns))
        if self.main_process:
            logger.info(_format_row(row, columns))
        self._keep_if_best(row, model, control)

    def _keep_if_best(self, row: dict[str, Any], model, control) -> None:
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


# -- the per-epoch table -------------------------------------------------------------------------------------------


def format_history(rows: list[dict[str, Any]], best_epoch: float | None = None, multi_label: bool = False) -> str:
    """The per-evaluation table as fixed-width text: epoch, train loss, val loss, accuracy (multi-label runs:
    micro-F1), macro-F1, seconds.

    The row of ``best_epoch`` is marked with ``*``.
    """
    columns = _MULTI_LABEL_HISTORY_COLUMNS if multi_label else _HISTORY_COLUMNS
    header = "".join(f"{name:>12}" for name in columns) + "\n"
    return header + "".join(_format_row(row, columns, row["epoch"] == best_epoch) + "\n" for row in rows)


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
