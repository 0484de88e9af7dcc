"""The training report: one self-contained ``report.html`` (charts drawn inline as SVG, no scripts, no network).

It shows the config and data summary, learning curves, the per-epoch table, per-class scores, a confusion-matrix
heat map (single-label tasks), precision-recall and ROC curves for binary tasks, the temperature and a reliability
diagram before and after it (:mod:`bertfit.calibration`), the most confident validation mistakes (true vs predicted
label sets for multi-label tasks), throughput and timings, and the environment.
:func:`build_report` makes the page from a model's card, its metrics and its per-text validation records (see
:meth:`bertfit.decision.DecisionRule.records`); the save stage writes it into every model directory, and
``bertfit report`` (:func:`bertfit.evaluate.write_report`) rebuilds it, optionally on another labelled file.
The charts are written by :mod:`bertfit.svg`, not matplotlib, so that building the report takes milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np

from . import svg
from .card import ModelCard
from .svg import escape

__all__ = ["build_report", "MISTAKES_SHOWN"]

MISTAKES_SHOWN = 20

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
padding:0 1rem;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.best td{background:#e8f5e9;font-weight:600}
svg{display:block;max-width:100%;height:auto;border:1px solid #eee;margin:.6rem 0}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}
.card b{display:block;font-size:1.5rem}.warn{background:#fff3e0;border:2px solid #e65100;padding:.8rem;
border-radius:6px}.muted{color:#666;font-size:.9rem}td.text{text-align:left;max-width:600px}
"""


# -- HTML ----------------------------------------------------------------------------------------------------------


def build_report(
    card: ModelCard, metrics: dict[str, Any], records: list[dict] | None = None, evaluated_on: str | None = None
) -> str:
    """The report as one self-contained HTML page.

    Args:
        card: The model's card (labels, decision, training record).
        metrics: Metrics as computed by :func:`bertfit.metrics.compute_metrics`.
        records: Per-text records of :meth:`bertfit.decision.DecisionRule.records`, for the mistakes and the PR/ROC
            curves.
        evaluated_on: The labelled file the metrics and records come from; default: the training run's validation.

    Returns:
        The HTML text.
    """
    records = records or []
    sections = [
        _summary(card, metrics, evaluated_on),
        _comparison(card, metrics),
        _config_and_data(card),
        _learning(card),
        _search(card),
        _per_class(card, metrics),
        _confusion(metrics),
        _binary_curves(card, metrics, records),
        _calibration(card, records, evaluated_on),
        _mistakes(card, records),
        _timings(card, records),
        _environment(card),
    ]
    title = f"bertfit report: {card.base_model or ''}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n<body>\n'
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>\n{body}\n</section>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, classes=None) -> str:
    head = "".join(
        f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>" for i, h in enumerate(header)
    )
    body = []
    for k, row in enumerate(rows):
        cells = "".join(
            f'<td class="{"text" if i < left else ""}">{_cell(v)}</td>' if i < left else f"<td>{_cell(v)}</td>"
            for i, v in enumerate(row)
        )
        css = f' class="{classes[k]}"' if classes and classes[k] else ""
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(value)


def _summary(card: ModelCard, metrics, evaluated_on: str | None) -> str:
    training = card.training
    if card.multi_label:
        names = (("subset_accuracy", "subset accuracy"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"))
        cards = [(name, metrics[key]) for key, name in (*names, ("hamming_loss", "Hamming loss"))]
    else:
        cards = [("accuracy", metrics["accuracy"]), ("macro-F1", metrics["macro_f1"]), ("MCC", metrics["mcc"])]
    if "positive_label" in metrics:
        cards.append((f"F1 of {metrics['positive_label']!r}", metrics["f1"]))
    card_html = "".join(f'<div class="card">{escape(name)}<b>{value:.4f}</b></div>' for name, value in cards)
    evaluated = evaluated_on or (training.validation_data.source if training else "validation")
    warnings = "".join(f'<p class="warn">{escape(w)}</p>' for w in (training.warnings if training else []))
    epoch = training.best.epoch if training else None
    picked = f"; best epoch {epoch:g} by {escape(training.best.metric)}" if epoch is not None else ""
    kind = "labels (multi-label: a set of labels per text)" if card.multi_label else "classes"
    return (
        f'<header id="summary"><h1>bertfit training report</h1><p class="muted">{escape(card.base_model)} '
        f"fine-tuned on {len(card.labels)} {kind}; scores on {escape(evaluated)}{picked}. Built "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by bertfit {escape(card.bertfit_version)}."
        f'</p><div class="cards">{card_html}</div>{warnings}</header>'
    )


_BASELINE_NAMES = {
    "majority_class": "majority class (the same label for every text)",
    "tfidf_logreg": "TF-IDF + logistic regression",
    "frozen_embeddings_logreg": "frozen embeddings + logistic regression",
}


def _comparison(card: ModelCard, metrics) -> str:
    """The model beside its untuned decisions (probability 0.5) and the baselines trained on the same split."""
    training = card.training
    tuning = training.threshold_tuning if training else None
    baselines = (training.baselines if training else None) or {}
    if not tuning and not baselines:
        return ""
    multi_label = card.multi_label
    if multi_label:
        columns = [("subset accuracy", "accuracy"), ("micro-F1", "micro_f1"), ("macro-F1", "macro_f1")]
    else:
        columns = [("accuracy", "accuracy"), ("macro-F1", "macro_f1")]
        if "positive_label" in metrics:
            columns.append((f"F1 of {metrics['positive_label']!r}", "f1"))
    threshold = card.decision.threshold
    tuned = "per-label thresholds" if multi_label else f"threshold {0.5 if threshold is None else threshold:.4f}"
    fusion = training.lexical
    model = "fine-tuned model + lexical head" if fusion is not None and fusion.kept else "fine-tuned model"
    rows = [[f"{model} ({tuned})" if tuning else model, metrics, training.train_seconds]]
    if tuning:
        rows.append([f"{model} at probability 0.5", tuning.at_half, None])
    for name, result in baselines.items():
        rows.append([_BASELINE_NAMES.get(name, name), result.get("metrics", {}), result.get("seconds")])
    table = _table(
        ["model", *(name for name, _ in columns), "seconds"],
        [[label, *(scores.get(key) for _, key in columns), seconds] for label, scores, seconds in rows],
    )
    notes = []
    if tuning:
        notes.append(
            "The tuned decision is chosen on these validation texts, so its row is slightly optimistic; the 0.5 row "
            "is the model's plain decision."
        )
    if baselines:
        notes.append(
            "Baselines: trained on the same training texts and scored on the same validation texts (seconds: fit "
            "and predict; the model's: training). A fine-tuned model that does not clearly beat TF-IDF is not worth "
            "its cost."
        )
    body = table + "".join(f'<p class="muted">{escape(note)}</p>' for note in notes)
    return _section("comparison", "What fine-tuning gained", body)


def _config_and_data(card: ModelCard) -> str:
    training = card.training
    config = training.config if training else {}
    rows = [(key, json.dumps(value) if not isinstance(value, str) else value) for key, value in config.items()]
    rows.append(("max_length (used)", card.max_length))
    if not card.multi_label:
        rows.append(("positive_label (used)", card.positive_label))
    data = {"train": training.train_data, "validation": training.validation_data} if training else {}
    splits = list(data)
    label_rows = [[label, *(data[s].label_counts.get(label, 0) for s in splits)] for label in card.labels]
    label_rows.append(["rows", *(data[s].rows for s in splits)])
    sources = "".join(
        f"<li>{escape(s)}: {escape(data[s].source)} ({data[s].rows:,} rows"
        + (f", {escape(data[s].origin)}" if data[s].origin else "")
        + ")</li>"
        for s in splits
    )
    body = (
        f"<h3>Data</h3><ul>{sources}</ul>{_table(['label', *splits], label_rows)}"
        f"<h3>Options</h3>{_table(['option', 'value'], rows, left=2)}"
    )
    return _section("config", "Config and data", body)


def _learning(card: ModelCard) -> str:
    history = card.training.history if card.training else []
    if not history:
        return _section("learning", "Learning curves and per-epoch table", "<p>No evaluation was recorded.</p>")
    best = card.training.best
    metric = best.metric or "macro_f1"
    shown = [m for m in dict.fromkeys([metric if metric != "loss" else "macro_f1", "accuracy"]) if m in history[0]]
    loss = svg.Panel(title="Loss", xlabel="epoch")
    epochs = [row["epoch"] for row in history]
    for key, name in (("train_loss", "train loss"), ("val_loss", "validation loss")):
        points = [(e, row[key]) for e, row in zip(epochs, history) if row.get(key) is not None]
        if points:
            loss.line(*zip(*points), name, marker=True)
    scores = svg.Panel(title="Validation metric per evaluation", xlabel="epoch")
    for key in shown:
        scores.line(epochs, [row.get(key) for row in history], f"validation {key}", marker=True)
    best_epoch = best.epoch
    if best_epoch is not None:
        for panel in (loss, scores):
            panel.vline(best_epoch, "best epoch")
    multi = ("micro_f1", "hamming_loss") if card.multi_label else ()
    columns = ("epoch", "step", "train_loss", "val_loss", "accuracy", *multi, "macro_f1", "mcc", "f1", "seconds")
    columns = [c for c in columns if any(c in row for row in history)]
    rows = [[_history_cell(c, row.get(c)) for c in columns] for row in history]
    classes = ["best" if row.get("epoch") == best_epoch else "" for row in history]
    note = (
        "<p class='muted'>Validation loss rising while train loss falls means overfitting; the best row (green) "
        "is the state that was kept.</p>"
    )
    return _section(
        "learning",
        "Learning curves and per-epoch table",
        svg.chart([loss, scores], "learning curves") + _table(columns, rows, left=0, classes=classes) + note,
    )


def _history_cell(column: str, value: Any) -> Any:
    if value is None or column not in ("epoch", "seconds"):
        return value
    return f"{value:g}" if column == "epoch" else f"{value:.1f}"


def _per_class(card: ModelCard, metrics) -> str:
    header = ["class", "precision", "recall", "f1", "support"]
    rows = [[label, s["precision"], s["recall"], s["f1"], s["support"]] for label, s in metrics["per_class"].items()]
    rows.append(["macro average", None, None, metrics["macro_f1"], sum(r[4] for r in rows)])
    if not card.multi_label:
        return _section("per-class", "Per-class precision, recall and F1", _table(header, rows))
    thresholds = card.decision.thresholds or {}
    for row in rows[:-1]:
        row.append(float(thresholds.get(row[0], 0.5)))
    rows[-1].append(None)
    rows.insert(-1, ["micro average", metrics["micro_precision"], metrics["micro_recall"], metrics["micro_f1"], None])
    rows[-2].append(None)
    note = (
        "<p class='muted'>Support: the texts that carry the label. A label is predicted when its probability reaches "
        "its threshold (tuned on validation, or 0.5); a text may get several labels or none.</p>"
    )
    table = _table(["label", *header[1:], "threshold"], rows)
    return _section("per-class", "Per-label precision, recall, F1 and threshold", table + note)


def _confusion(metrics) -> str:
    if "confusion_matrix" not in metrics:  # multi-label: the per-label table above takes its place
        return ""
    cm = metrics["confusion_matrix"]
    labels, matrix = cm["labels"], np.asarray(cm["matrix"])
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)  # row-normalized: recall on the diagonal
    counts = [[f"{count:,}" for count in row] for row in matrix.tolist()] if len(labels) <= 20 else None
    chart = svg.heatmap(
        share.tolist(),
        labels,
        "confusion matrix",
        title="Confusion matrix (counts; colour: share of row)",
        xlabel="predicted label",
        ylabel="true label",
        scale_label="share of the true class",
        cell_text=counts,
    )
    return _section("confusion", "Confusion matrix", chart)


def _binary_curves(card: ModelCard, metrics, records) -> str:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    positive = metrics.get("positive_label") or card.positive_label
    if len(card.labels) != 2 or card.multi_label or positive is None or not records:
        return ""
    truth = np.array([r["true_label"] == positive for r in records])
    if truth.all() or not truth.any():
        return _section("curves", "Precision-recall and ROC curves", "<p>Both classes are needed for the curves.</p>")
    scores = np.array([r[f"prob_{positive}"] for r in records])
    precision, recall, _ = precision_recall_curve(truth, scores)
    fpr, tpr, _ = roc_curve(truth, scores)
    ap, auc = average_precision_score(truth, scores), roc_auc_score(truth, scores)
    pr = svg.Panel(f"Precision-recall, positive class {positive!r}", "recall", "precision", legend="lower left")
    pr.line(recall, precision, f"AP {ap:.3f}").hline(truth.mean(), f"chance ({truth.mean():.3f})")
    roc = svg.Panel("ROC", "false positive rate", "true positive rate", legend="lower right")
    roc.line(fpr, tpr, f"ROC AUC {auc:.3f}").line([0, 1], [0, 1], "chance", color=svg.GRAY, dash="dotted")
    body = svg.chart([pr, roc], "precision-recall and ROC curves") + (
        f"<p>Average precision {ap:.4f}, ROC AUC {auc:.4f} for {positive!r} on {len(records):,} texts.</p>"
    )
    return _section("curves", "Precision-recall and ROC curves", body)


def _calibration(card: ModelCard, records, evaluated_on: str | None) -> str:
    """The temperature fitted on validation, NLL and ECE at 1 and at it, and the reliability diagram of both; on
    another labelled file also that file's calibrated curve (from its records)."""
    from .calibration import reliability, targets_of

    calibration = card.training.calibration if card.training else None
    if calibration is None:
        return ""
    t = calibration.temperature
    curves = [
        (f"validation, T = 1 (uncalibrated): ECE {calibration.before.ece:.4f}", calibration.before),
        (f"validation, T = {t:g}: ECE {calibration.after.ece:.4f}", calibration.after),
    ]
    note = ""
    if evaluated_on and records:
        truth = [r["true_labels"] if card.multi_label else r["true_label"] for r in records]
        probs = np.array([[r[f"prob_{label}"] for label in card.labels] for r in records])  # (n_texts, n_labels)
        on_file = reliability(probs, targets_of(truth, card.decision), card.multi_label)
        curves.append((f"{evaluated_on}, T = {t:g}: ECE {on_file.ece:.4f}", on_file))
        note = f"<p>On {escape(evaluated_on)} (T = {t:g}): ECE {on_file.ece:.4f} over {len(records):,} texts.</p>"
    rows = [
        ("negative log-likelihood", calibration.nll_before, calibration.nll_after),
        ("expected calibration error (ECE)", calibration.before.ece, calibration.after.ece),
    ]
    how = f"kept at 1: {calibration.kept}" if calibration.kept else f"fitted on {calibration.texts:,} validation texts"
    intro = (
        f"<p>Every logit is divided by the temperature T = {t:g} ({escape(how)}) before the "
        f"{'sigmoid' if card.multi_label else 'softmax'}: the most probable label stays, the probabilities move "
        "towards how often the model is right. ECE: the text-weighted mean gap between confidence and accuracy over "
        f"{len(calibration.after.counts)} equal-width confidence bins"
        + (" (every label's probability of every text)" if card.multi_label else "")
        + ".</p>"
    )
    table = _table(["on validation", "T = 1", f"T = {t:g}"], rows)
    fusion = card.training.lexical
    if fusion is not None and fusion.kept:  # what the saved model predicts is the average (bertfit.lexical)
        note += (
            f"<p>The model averages these probabilities with its lexical head's (TF-IDF + logistic regression), then "
            f"divides the log of the average by a temperature of its own, {fusion.temperature:g}, fitted on "
            f"validation: ECE of the average {fusion.ece_before:.4f} -> {fusion.ece_after:.4f}. The table and curves "
            "above are the "
            "encoder's; the records, the metrics and every prediction are the average's.</p>"
        )
    diagram = _reliability_chart(curves, card)
    return _section("calibration", "Calibration", intro + table + note + diagram)


def _reliability_chart(curves, card: ModelCard) -> str:
    # Left: accuracy against mean confidence per bin (filled bins only); right: how many confidences fall in each bin.
    what = "a label's probability" if card.multi_label else "probability of the predicted label"
    right = "share of true labels" if card.multi_label else "share predicted right"
    diagram = svg.Panel("Reliability diagram", what, right, xlim=(0, 1), ylim=(0, 1))
    diagram.line([0, 1], [0, 1], "calibrated", color=svg.GRAY, dash="dotted")
    count = svg.Panel("Confidences per bin", what, "count (log scale)", xlim=(0, 1), ylog=True, legend=None)
    n_bins = len(curves[0][1].counts)
    width = 1 / n_bins / len(curves)
    for k, (name, bins) in enumerate(curves):
        filled = [(c, a) for c, a in zip(bins.confidence, bins.accuracy) if c is not None]
        diagram.line([c for c, _ in filled], [a for _, a in filled], name, marker=True)
        count.bars(np.arange(n_bins) / n_bins + k * width, bins.counts, width, name)
    return svg.chart([diagram, count], "reliability diagram")


def _mistakes(card: ModelCard, records) -> str:
    if not records:
        return ""
    multi_label = card.multi_label
    # Sorted by confidence: the probability of the wrong label, or (multi-label) the largest error of any label's
    # probability, i.e. the probability of a wrongly predicted label or 1 - that of a missed one.
    confidence = _label_set_error if multi_label else (lambda r: r["score"])
    truth = "true_labels" if multi_label else "true_label"
    predicted = "labels" if multi_label else "label"
    wrong = sorted((r for r in records if r[predicted] != r[truth]), key=lambda r: -confidence(r))
    if not wrong:
        return _section("mistakes", "Most confident mistakes", f"<p>No mistakes on {len(records):,} texts.</p>")
    shown = wrong[:MISTAKES_SHOWN]
    if multi_label:
        header = ["text", "true labels", "predicted labels", "largest error"]
        rows = [[r["text"], _set(r["true_labels"]), _set(r["labels"]), confidence(r)] for r in shown]
        missed = "get a label set other than their true one"
    else:
        header = ["text", "true label", "predicted label", "probability"]
        rows = [[r["text"], r["true_label"], r["label"], r["score"]] for r in shown]
        missed = "are misclassified"
    intro = (
        f"<p>{len(wrong):,} of {len(records):,} texts {missed}; the {len(rows)} the model was surest of "
        "are below. Confident mistakes are often label errors in the data.</p>"
    )
    return _section("mistakes", "Most confident mistakes", intro + _table(header, rows, left=3))


def _label_set_error(record: dict) -> float:
    true = set(record["true_labels"])
    return max(
        abs(float(value) - (key[len("prob_") :] in true)) for key, value in record.items() if key.startswith("prob_")
    )


def _set(labels: Sequence[str]) -> str:
    return ", ".join(labels) if labels else "(none)"


def _search(card: ModelCard) -> str:
    """The trials of the hyperparameter search that chose the options (``bertfit tune``); the saved one in green."""
    search = card.training.search if card.training else None
    if search is None:
        return ""
    names = list(dict.fromkeys(name for trial in search.trials for name in trial["params"]))
    rows = [
        [
            trial["number"],
            trial["state"] + (f" ({trial['pruned_by']})" if trial.get("pruned_by") else ""),
            trial.get("value"),
            *(_param(trial["params"].get(name)) for name in names),
            trial.get("evaluations"),
            f"{trial['seconds']:.1f}",
        ]
        for trial in search.trials
    ]
    classes = ["best" if trial["number"] == search.best_trial else "" for trial in search.trials]
    table = _table(["trial", "state", search.metric, *names, "evaluations", "seconds"], rows, left=2, classes=classes)
    budget = f" within a time budget of {search.time_budget:g} s" if search.time_budget is not None else ""
    note = (
        f"<p class='muted'>{len(search.trials)} trials in {search.seconds:.0f} s{budget}, on the validation split "
        f"above. The saved model is the green trial's. A pruned trial stopped at an evaluation (its value: the best "
        f"until then); the other options are those of the config table.</p>"
    )
    return _section("search", "Hyperparameter search", table + note)


def _param(value: Any) -> Any:
    return f"{value:.3g}" if isinstance(value, float) else value  # a learning rate of 3e-05, not 0.0000


def _timings(card: ModelCard, records) -> str:
    training = card.training
    if training is None:
        return ""
    seconds, tokens = training.train_seconds, training.train_tokens
    padding = training.padding_share
    rows = [
        ("training time (s)", seconds),
        ("real tokens trained on", tokens),
        ("training throughput (real tokens/s)", round(tokens / seconds) if tokens and seconds else None),
        ("padding share of training batches", f"{padding:.1%}" if padding is not None else None),
    ]
    predict_seconds = training.validation_seconds
    if predict_seconds:
        n = training.validation_data.rows or len(records)
        rows.append(("validation prediction time (s)", predict_seconds))
        rows.append(("prediction throughput (texts/s)", round(n / predict_seconds)))
    check = training.precision_check
    if check:
        agreement = f"{check['label_agreement']:.2%} of {check['texts']:,} texts"
        rows.append((f"{check['precision']} prediction (predict's default) gives the fp32 decision on", agreement))
    for row in training.history:
        rows.append((f"epoch {row['epoch']:g}: train + evaluation (s)", row.get("seconds")))
    return _section("timings", "Throughput and timings", _table(["", "value"], rows))


def _environment(card: ModelCard) -> str:
    training = card.training
    rows = [("bertfit", card.bertfit_version), *(training.versions.items() if training else [])]
    if training is not None:
        rows += [("device", training.device), ("precision", training.precision), *training.environment.items()]
    return _section("environment", "Environment", _table(["", "value"], rows))
