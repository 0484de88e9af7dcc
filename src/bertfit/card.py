"""The model card: everything bertfit knows about a model, as one typed object, and the only reader and writer of
``bertfit.json`` and its sibling files in a model directory.

A :class:`ModelCard` holds the labels and task kind (inside its :class:`~bertfit.decision.DecisionRule`), how texts
become inputs (its :class:`~bertfit.features.Windowing`, which carries ``max_length``), the base model, the training
record of the run that produced it, and for ONNX exports the export's format. ``bertfit.json`` is its serialized
form; :meth:`ModelCard.to_info` and :meth:`ModelCard.from_info` are exact inverses, and every ``bertfit.json`` written
by bertfit 0.x reads back (older ones without a ``long_text`` entry truncate, those without a ``temperature`` are
uncalibrated: 1).

Files of a model directory (:func:`write_model_files`, :func:`read_model_files`):

- ``bertfit.json``: the card;
- ``metrics.json``: the final validation metrics;
- ``validation_predictions.jsonl``: one record per validation text, what ``report.html`` is built from;
- ``report.html``: the training report (built by :mod:`bertfit.report`, written here with the rest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .calibration import Calibration
from .decision import DecisionRule
from .exceptions import DataError, ModelError
from .features import Windowing
from .files import read_json, write_json
from .lexical import Fusion

__all__ = [
    "ModelCard",
    "TrainingRecord",
    "DataSummary",
    "BestEpoch",
    "ThresholdTuning",
    "SearchRecord",
    "ModelFiles",
    "read_model_files",
    "write_model_files",
    "read_records",
    "CARD_FILE",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "REPORT_FILE",
]

CARD_FILE = "bertfit.json"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "validation_predictions.jsonl"
REPORT_FILE = "report.html"


@dataclass
class DataSummary:
    """A data split of a training run: where it came from, its size, a fingerprint and its label counts."""

    source: str
    rows: int
    fingerprint: str
    label_counts: dict[str, int]
    origin: str | None = None  # validation only: "split" (held out of the training file) or "file"

    def to_info(self) -> dict[str, Any]:
        info = {"source": self.source, "rows": self.rows, "fingerprint": self.fingerprint}
        info["label_counts"] = dict(self.label_counts)
        return info if self.origin is None else {**info, "from": self.origin}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> DataSummary:
        return cls(info["source"], info["rows"], info["fingerprint"], info["label_counts"], info.get("from"))


@dataclass
class BestEpoch:
    """The evaluation whose state was kept: its epoch and the value of the selection metric."""

    epoch: float | None
    metric: str
    value: float | None

    def to_info(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metric": self.metric, "value": self.value}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> BestEpoch:
        return cls(info.get("epoch"), info["metric"], info.get("value"))


@dataclass
class ThresholdTuning:
    """How the decision threshold(s) were tuned on validation, with the untuned (0.5) scores beside them.

    ``value`` is the objective reached by a binary threshold; ``values`` the objective per tuned label of a
    multi-label model.
    """

    metric: str
    at_half: dict[str, float]
    value: float | None = None
    values: dict[str, float] | None = None

    def to_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"metric": self.metric}
        if self.values is not None:
            info["values"] = dict(self.values)
        else:
            info["value"] = self.value
        return {**info, "at_0.5": dict(self.at_half)}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ThresholdTuning:
        return cls(info["metric"], info["at_0.5"], info.get("value"), info.get("values"))


@dataclass
class SearchRecord:
    """The hyperparameter search (``bertfit tune``) that chose the run's options: one row per trial, with its
    ``number``, ``state`` (complete, pruned or failed), ``params``, ``value`` (of ``metric`` on validation; for a
    pruned trial its best when it was stopped), ``evaluations``, ``seconds`` and, when pruned, ``pruned_by``."""

    metric: str
    best_trial: int
    trials: list[dict[str, Any]]
    seconds: float
    time_budget: float | None = None  # seconds; None: no budget
    settings: dict[str, Any] = field(default_factory=dict)  # sampler, pruner, search space

    def to_info(self) -> dict[str, Any]:
        info = {"metric": self.metric, "best_trial": self.best_trial, "seconds": self.seconds}
        return {**info, "time_budget": self.time_budget, "settings": self.settings, "trials": self.trials}

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> SearchRecord:
        required = (info["metric"], info["best_trial"], info["trials"], info["seconds"])
        return cls(*required, info.get("time_budget"), info.get("settings", {}))


@dataclass
class TrainingRecord:
    """What happened in the training run that produced a model."""

    config: dict[str, Any]
    precision: str
    device: str
    environment: dict[str, Any]
    train_data: DataSummary
    validation_data: DataSummary
    history: list[dict[str, Any]]
    best: BestEpoch
    schedule: dict[str, int] = field(default_factory=dict)
    log_history: list[dict[str, Any]] = field(default_factory=list)
    setup_seconds: float | None = None
    train_seconds: float | None = None
    train_tokens: int | None = None
    padding_share: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    windows: dict[str, int] | None = None  # chunk mode: train_windows, validation_windows
    validation_seconds: float | None = None
    threshold_tuning: ThresholdTuning | None = None
    baselines: dict[str, dict[str, Any]] | None = None  # name -> {"metrics": scalar metrics, "seconds"}
    # How prediction in the fast precision (bf16 where the hardware has it: predict's and serve's default) agrees with
    # fp32 on the validation texts: {"precision", "texts", "computed_texts" (those nearest the decision boundary, where
    # the second precision was computed; see bertfit.pipeline), "label_agreement", "max_abs_prob_diff"}.
    precision_check: dict[str, Any] | None = None
    checkpoints: dict[str, Any] | None = None  # {"writes", "seconds", "bytes"}: what checkpointing cost the run
    calibration: Calibration | None = None  # the temperature fitted on validation, with ECE and NLL before and after
    search: SearchRecord | None = None  # the trials of bertfit tune, for a model it chose
    lexical: Fusion | None = None  # the lexical head on validation: kept or not, and why

    _SCALARS = ("setup_seconds", "train_seconds", "train_tokens", "padding_share", "validation_seconds")

    def to_info(self) -> dict[str, Any]:
        """The training entries of ``bertfit.json``."""
        info: dict[str, Any] = {
            "config": self.config,
            "precision": self.precision,
            "device": self.device,
            "environment": self.environment,
            "data": {"train": self.train_data.to_info(), "validation": self.validation_data.to_info()},
            "history": self.history,
            "schedule": self.schedule,
            "log_history": self.log_history,
            "best": self.best.to_info(),
        }
        info.update({name: getattr(self, name) for name in self._SCALARS if getattr(self, name) is not None})
        info.update(warnings=self.warnings, versions=self.versions)
        if self.threshold_tuning is not None:
            info["threshold_tuning"] = self.threshold_tuning.to_info()
        if self.baselines is not None:
            info["baselines"] = self.baselines
        if self.precision_check is not None:
            info["precision_check"] = self.precision_check
        if self.checkpoints is not None:
            info["checkpoints"] = self.checkpoints
        if self.calibration is not None:
            info["calibration"] = self.calibration.to_info()
        if self.search is not None:
            info["search"] = self.search.to_info()
        if self.lexical is not None:
            info["lexical"] = self.lexical.to_info()
        return info

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> TrainingRecord | None:
        """The record in a ``bertfit.json`` mapping, or None for a model that bertfit did not train."""
        if "config" not in info or "data" not in info:
            return None
        tuning = info.get("threshold_tuning")
        calibration = info.get("calibration")
        windows = {k: v for k, v in (info.get("long_text") or {}).items() if k.endswith("_windows")}
        return cls(
            config=info["config"],
            precision=info.get("precision", "fp32"),
            device=info.get("device", "cpu"),
            environment=info.get("environment", {}),
            train_data=DataSummary.from_info(info["data"]["train"]),
            validation_data=DataSummary.from_info(info["data"]["validation"]),
            history=info.get("history", []),
            best=BestEpoch.from_info(info.get("best") or {"metric": info["config"].get("metric_for_best_model")}),
            schedule=info.get("schedule", {}),
            log_history=info.get("log_history", []),
            versions=info.get("versions", {}),
            warnings=info.get("warnings", []),
            windows=windows or None,
            threshold_tuning=ThresholdTuning.from_info(tuning) if tuning else None,
            baselines=info.get("baselines"),
            precision_check=info.get("precision_check"),
            checkpoints=info.get("checkpoints"),
            calibration=Calibration.from_info(calibration) if calibration else None,
            search=SearchRecord.from_info(info["search"]) if info.get("search") else None,
            lexical=Fusion.from_info(info["lexical"]) if info.get("lexical") else None,
            **{name: info.get(name) for name in cls._SCALARS},
        )


@dataclass
class ModelCard:
    """Everything bertfit knows about a model.

    Args:
        decision: Labels, task kind and decision rule.
        windowing: How texts become inputs (``max_length``, truncate or chunk).
        base_model: The encoder it was fine-tuned from (hub id or directory).
        bertfit_version: The bertfit that wrote it.
        training: The training run's record; None for a model bertfit did not train.
        export: For an ONNX export: ``{"format", "quantize", "opset"}``.

    >>> card = ModelCard(DecisionRule(("ham", "spam"), positive_label="spam"), Windowing(64))
    >>> card.labels, card.max_length, card.multi_label
    (['ham', 'spam'], 64, False)
    """

    decision: DecisionRule
    windowing: Windowing
    base_model: str | None = None
    bertfit_version: str | None = None
    training: TrainingRecord | None = None
    export: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str]:
        """Label names in id order."""
        return list(self.decision.labels)

    @property
    def multi_label(self) -> bool:
        """Whether the model predicts a set of labels per text (sigmoid outputs)."""
        return self.decision.multi_label

    @property
    def positive_label(self) -> str | None:
        """The positive class of a binary task, else None."""
        return self.decision.positive_label

    @property
    def max_length(self) -> int:
        """Tokens per input window."""
        return self.windowing.max_length

    def with_decision(self, decision: DecisionRule) -> ModelCard:
        """A copy of the card with another decision rule (e.g. thresholds tuned on validation)."""
        return replace(self, decision=decision)

    def to_info(self) -> dict[str, Any]:
        """The card as the JSON-ready mapping saved as ``bertfit.json``."""
        long_text = self.windowing.to_info()
        if self.training is not None and self.training.windows:
            long_text.update(self.training.windows)
        info: dict[str, Any] = {"bertfit_version": self.bertfit_version, "labels": self.labels}
        info.update(multi_label=self.multi_label, **self.decision.to_info())
        info.update(max_length=self.max_length, long_text=long_text, base_model=self.base_model)
        if self.training is not None:
            info.update(self.training.to_info())
        if self.export is not None:
            info["export"] = self.export
        return info

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> ModelCard:
        """The card saved in a ``bertfit.json`` mapping.

        Raises:
            ModelError: The mapping lacks ``labels`` or ``max_length``.
        """
        missing = [key for key in ("labels", "max_length") if key not in info]
        if missing:
            raise ModelError(f"{CARD_FILE} lacks {missing}; it was not written by bertfit, or it was edited")
        return cls(
            decision=DecisionRule.from_info(info),
            windowing=Windowing.from_info(info),
            base_model=info.get("base_model"),
            bertfit_version=info.get("bertfit_version"),
            training=TrainingRecord.from_info(info),
            export=info.get("export"),
        )


@dataclass
class ModelFiles:
    """What bertfit keeps in a model directory besides weights and tokenizer (see the module docstring)."""

    card: ModelCard | None
    metrics: dict[str, Any] | None
    records: list[dict[str, Any]] | None


def read_model_files(directory: str | Path) -> ModelFiles:
    """The card, metrics and validation records of a model directory; None for each file that is absent.

    Raises:
        ModelError: ``bertfit.json`` or ``metrics.json`` is not valid JSON, or the card lacks required entries.
    """
    directory = Path(directory)
    card_file, metrics_file = directory / CARD_FILE, directory / METRICS_FILE
    try:
        card = ModelCard.from_info(read_json(card_file)) if card_file.is_file() else None
        metrics = read_json(metrics_file) if metrics_file.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelError(f"could not read the files of {directory}: {err}; train the model again") from None
    predictions = directory / PREDICTIONS_FILE
    return ModelFiles(card, metrics, read_records(predictions) if predictions.is_file() else None)


def write_model_files(
    directory: str | Path,
    card: ModelCard,
    metrics: dict[str, Any] | None = None,
    records: list[dict[str, Any]] | None = None,
    report: str | None = None,
) -> None:
    """Write the card and, where given, the metrics, the validation records and the report HTML into ``directory``
    (a staging directory of :func:`bertfit.files.atomic_directory`)."""
    directory = Path(directory)
    write_json(directory / CARD_FILE, card.to_info())
    if metrics is not None:
        write_json(directory / METRICS_FILE, metrics)
    if records is not None:
        lines = (json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        (directory / PREDICTIONS_FILE).write_text("".join(lines), encoding="utf-8")
    if report is not None:
        (directory / REPORT_FILE).write_text(report, encoding="utf-8")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``validation_predictions.jsonl`` file.

    Raises:
        DataError: The file does not exist.
    """
    if not path.is_file():
        raise DataError(
            f"{path.parent} has no {PREDICTIONS_FILE} (it was trained before reports existed); pass --data with a "
            "labelled file to build the report on"
        )
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
