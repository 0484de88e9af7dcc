"""train(config, data) -> TextClassifier: one call that reads, splits, fine-tunes, validates and saves.

The stages themselves live one module each (see :mod:`bertfit.pipeline`); this module runs them, hands the result to
the save stage when ``config.output_dir`` is set, closes the experiment tracker, and formats what ``bertfit train``
prints.
"""

from __future__ import annotations

from pathlib import Path

from .baseline import format_baselines
from .card import REPORT_FILE
from .checkpoint import RESUME_HINT
from .config import TrainConfig
from .data import TextDataset, data_source
from .files import check_output_dir
from .hub import check_push, push_to_hub
from .metrics import format_metrics
from .model import TextClassifier
from .pipeline import fit
from .save import save_model
from .track import Tracker
from .trainer import format_history, is_main_process

__all__ = ["train", "summary", "is_main_process"]


def train(
    config: TrainConfig,
    train_data: TextDataset | str | Path,
    validation_data: TextDataset | str | Path | None = None,
) -> TextClassifier:
    """Fine-tune ``config.model_name_or_path`` on labelled texts and return the best epoch's classifier.

    Evaluates on validation after every epoch (or every ``eval_steps``), keeps the best state by
    ``config.metric_for_best_model``, restores it, tunes the decision threshold(s), computes the final metrics and,
    when ``config.output_dir`` is set, saves the model directory atomically (and uploads it to ``config.push_to_hub``
    on the Hugging Face Hub when that is set). With ``config.long_text`` "chunk" it
    trains on overlapping windows of the texts, each labelled with its text's label; metrics, threshold and report
    stay per text (a text's logits aggregate its windows'), while the per-epoch validation loss is a mean over windows.

    Args:
        config: Training options.
        train_data: Labelled texts, or a file to read with ``config.text_column`` / ``config.label_column`` (and
            ``config.label_sep``). Label sets make a multi-label model.
        validation_data: Labelled texts or a file for model selection; default: a stratified
            ``config.val_size`` share of ``train_data``.

    Returns:
        The fitted classifier; ``.metrics`` holds the final validation metrics and ``.card.training`` the run's
        record (``.info_["history"]``: the per-evaluation table).

    Raises:
        DataError: Unusable data (fewer than two classes, unknown validation labels, ...).
        ConfigError: An option that does not fit the data or hardware.
        ModelError: The model cannot be loaded.
        OutputExistsError: ``config.output_dir`` holds files and ``config.overwrite`` is False.
        TrainingError: The loss became NaN or infinite; the best state before it was saved, if there was one.
        HubError: ``config.push_to_hub`` is set and the upload failed; the model is saved in ``config.output_dir``.

    >>> clf = train(TrainConfig(output_dir="runs/spam"), "examples/sms_spam.csv")  # doctest: +SKIP
    """
    if config.output_dir:
        # Every rank of a distributed run checks before training; only rank 0 writes, after training.
        inputs = (*map(data_source, (train_data, validation_data)), config.model_name_or_path)
        check_output_dir(config.output_dir, config.overwrite, inputs)  # fail before minutes of training, not after
    if config.push_to_hub:
        check_push(config.push_to_hub, config.output_dir)  # a missing token or a malformed id: before training too
    tracker = Tracker(config, main_process=is_main_process())
    fitted = fit(config, train_data, validation_data, tracker)
    parts = (fitted.model, fitted.tokenizer, fitted.card, fitted.metrics, fitted.records)
    classifier = TextClassifier._from_trained(*parts, fitted.lexical, batch_size=config.eval_batch_size)
    if not fitted.result.main_process:  # another rank of a distributed run: rank 0 saves and tracks
        return classifier
    if config.output_dir:
        then = "save again" if fitted.checkpointer is None else RESUME_HINT
        save_model(config.output_dir, *parts, lexical=fitted.lexical, overwrite=config.overwrite, then=then)
        if fitted.checkpointer is not None:  # the model is saved: its checkpoint is no longer needed
            fitted.checkpointer.remove()
    tracker.finish(classifier.metrics, config.output_dir)
    fitted.raise_if_diverged(saved_to=config.output_dir)
    if config.push_to_hub:  # last: a failed upload leaves the model saved and the run tracked
        push_to_hub(config.output_dir, config.push_to_hub, private=config.hub_private)
    return classifier


def summary(classifier: TextClassifier, output_dir: str | Path | None = None) -> str:
    """What ``bertfit train`` prints after training: the per-epoch table, the final metrics, the tuned decision, the
    baselines beside the model, and where the model and its report were saved."""
    record, decision = classifier.card.training, classifier.decision
    best = record.best
    lines = [f"\nPer-epoch validation ({best.metric} picked epoch {best.epoch:g}, marked *):"]
    lines.append(format_history(record.history, best.epoch, decision.multi_label).rstrip("\n"))
    lines.append(f"\nFinal metrics on {record.validation_data.rows} validation texts:")
    lines.append(format_metrics(classifier.metrics))
    tuning = record.threshold_tuning
    if tuning is not None and decision.multi_label:
        half, cuts = tuning.at_half, decision.cuts()
        lines.append(
            f"  decision thresholds per label {cuts.min():.4f} to {cuts.max():.4f}, tuned on validation for "
            f"{tuning.metric} (the per_class table of metrics.json lists them); at 0.5 instead: micro_f1 "
            f"{half['micro_f1']:.4f}, macro_f1 {half['macro_f1']:.4f}, subset accuracy {half['accuracy']:.4f}"
        )
    elif tuning is not None:
        half = tuning.at_half
        lines.append(
            f"  decision threshold {decision.threshold:.4f} on P({decision.positive_label}), tuned on validation for "
            f"{tuning.metric}; at 0.5 instead: f1 {half['f1']:.4f}, precision {half['precision']:.4f}, "
            f"recall {half['recall']:.4f}"
        )
    calibration = record.calibration
    if calibration is not None:
        how = f"kept at 1: {calibration.kept}" if calibration.kept else "fitted on validation"
        lines.append(
            f"  temperature {calibration.temperature:g} ({how}); expected calibration error "
            f"{calibration.before.ece:.4f} at 1 -> {calibration.after.ece:.4f}"
        )
    fusion = record.lexical
    if fusion is not None:
        lines.append(
            f"  lexical head (TF-IDF + logistic regression, {fusion.terms:,} terms): {fusion.metric} "
            f"{fusion.encoder:.4f} for the encoder alone, {fusion.fused:.4f} averaged with it; {fusion.reason}"
        )
    check = record.precision_check
    if check:
        lines.append(
            f"  predict and serve default to {check['precision']}: it gives the fp32 decision on "
            f"{check['label_agreement']:.2%} of these texts ({_computed(check)}largest probability difference "
            f"{check['max_abs_prob_diff']:.2g}; --precision fp32 for exact probabilities)"
        )
    if record.baselines:
        rows = {"fine-tuned (this model)": {"metrics": classifier.metrics, "seconds": record.train_seconds}}
        lines.append("\nAgainst baselines on the same validation texts (fine-tuned: training seconds):")
        lines.append(format_baselines({**rows, **record.baselines}, decision.multi_label))
    if output_dir:
        lines.append(f"\nModel saved to {output_dir} (training took {record.train_seconds:.0f} s)")
        lines.append(f"Report: {Path(output_dir) / REPORT_FILE} (open it in a browser)")
    return "\n".join(lines)


def _computed(check: dict) -> str:
    # Which texts the check computed in both precisions (older model directories did not record it: all).
    computed = check.get("computed_texts", check["texts"])
    if computed >= check["texts"]:
        return ""
    return f"compared for the {computed:,} nearest the decision boundary, where a decision can change; "
