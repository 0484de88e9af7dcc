"""Hyperparameter search: :func:`tune` tries training options (learning rate, epochs, batch size, warm-up ratio,
class weights) with Optuna's TPE sampler and saves the best trial's model as ``bertfit train`` saves a model.

How a search runs, and why:

- **One split, one tokenization.** The data and features stages run once (:func:`bertfit.pipeline.prepare`):
  every trial trains on the split ``bertfit train`` makes with the same options (``seed``, ``val_size``, or the
  validation file) and on the same token windows, which none of the searched options changes.
- **A trial** is a training run of ``bertfit train`` with its options (the same seed, so the same head
  initialization and shuffling), without the validate and save stages: no file, no baselines. It reports each
  evaluation's ``metric_for_best_model`` on validation to Optuna; its value is that of its best evaluation, the
  state training keeps.
- **Pruning**: Optuna's ``MedianPruner`` stops a trial at an evaluation where its best value so far is worse than
  the median of the earlier trials at the same evaluation, from the :data:`PRUNER_STARTUP_TRIALS` + 1-th trial on
  and from the first evaluation. Evaluations are counted rather than steps: the trials' batch sizes differ, the
  epoch fraction of their k-th evaluation does not.
- **The best trial's model is kept in memory** (the model in its best state, and that evaluation's validation
  logits), and it alone goes through the validate and save stages (threshold tuning, calibration, baselines,
  report), with the trials' table in its ``bertfit.json`` and report. Training it again would cost one more trial
  (measured: README); keeping it costs the memory of one model's weights while later trials train.
- **The time budget** (counted from the call) stops starting trials once spent (``study.optimize(timeout=...)``), and
  a trial still running stops at its next evaluation (state pruned, ``pruned_by`` "time budget") unless no trial has
  completed yet. The first trial always runs, so a search returns a model unless its trials diverge. It overruns the
  budget by at most one evaluation interval (or the rest of the first trial), plus the validate and save stages of
  the best trial.
- **Reproducible**: the sampler is seeded with ``config.seed``; the same data, options and number of trials give
  the same trials (with a time budget, how many fit depends on the machine).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .card import SearchRecord
from .config import TrainConfig
from .data import TextDataset, data_source
from .exceptions import ConfigError, MissingDependencyError, TrainingError, TrainingInterrupted
from .files import check_output_dir
from .model import TextClassifier
from .pipeline import Fitted, Prepared, fit, prepare, validate_fitted
from .save import save_model
from .train import summary

__all__ = ["SearchSpace", "SEARCHED", "PRUNER_STARTUP_TRIALS", "tune", "parse_duration", "tune_summary"]

logger = logging.getLogger(__name__)

# The trials that complete before the pruner compares with them (Optuna's default, 5, leaves nothing to prune in a
# search of a few trials; with 2, the third trial on is pruned when it is below the median of those before it).
PRUNER_STARTUP_TRIALS = 2
# How each searched option is drawn: log-uniform, uniform, whole numbers in a range, or one of the choices.
_KINDS = {
    "learning_rate": "log",
    "epochs": "int",
    "batch_size": "choice",
    "warmup_ratio": "uniform",
    "class_weights": "choice",
}
SEARCHED = tuple(_KINDS)
_clock = time.monotonic  # the time budget's clock (a name of its own, so that tests can move it)


@dataclass(frozen=True)
class SearchSpace:
    """The training options a search draws; None leaves an option out (it keeps the config's value).

    The default ranges surround the defaults measured for the embedded MiniLM (README, Defaults).

    Args:
        learning_rate: ``(low, high)``, drawn log-uniformly.
        epochs: ``(low, high)``, whole epochs.
        batch_size: The batch sizes to choose from.
        warmup_ratio: ``(low, high)``, drawn uniformly.
        class_weights: Choices among "none" and "balanced".

    Raises:
        ConfigError: A range that is not ``(low, high)`` with low <= high, an empty choice, or a value that
            :class:`~bertfit.config.TrainConfig` refuses.

    >>> SearchSpace().without(["epochs"]).epochs is None
    True
    """

    learning_rate: tuple[float, float] | None = (1e-5, 3e-4)
    epochs: tuple[int, int] | None = (1, 5)
    batch_size: tuple[int, ...] | None = (16, 32, 64)
    warmup_ratio: tuple[float, float] | None = (0.0, 0.2)
    class_weights: tuple[str, ...] | None = ("none", "balanced")

    def __post_init__(self) -> None:
        for name, kind in _KINDS.items():
            values = getattr(self, name)
            if values is None:
                continue
            values = tuple(values)
            ranged = kind != "choice"
            if (ranged and (len(values) != 2 or values[0] > values[1])) or not values:
                expected = "(low, high) with low <= high" if ranged else "a non-empty tuple of choices"
                raise ConfigError(f"search space {name} must be {expected}, got {values!r}")
            if name == "class_weights" and not all(value in ("none", "balanced") for value in values):
                raise ConfigError(f"search space class_weights chooses among 'none' and 'balanced', got {values!r}")
            for value in values:  # each end or choice must be a valid option
                TrainConfig(**{name: value})
            object.__setattr__(self, name, values)

    def without(self, names) -> SearchSpace:
        """The space without the options in ``names`` (those a user set: they stay fixed)."""
        return replace(self, **{name: None for name in names if name in _KINDS})

    def searched(self) -> list[str]:
        """The names of the options drawn."""
        return [name for name in _KINDS if getattr(self, name) is not None]

    def suggest(self, trial) -> dict[str, Any]:
        """One trial's options, drawn by the Optuna ``trial``."""
        params: dict[str, Any] = {}
        for name in self.searched():
            kind, values = _KINDS[name], getattr(self, name)
            if kind == "choice":
                params[name] = trial.suggest_categorical(name, list(values))
            elif kind == "int":
                params[name] = trial.suggest_int(name, *values)
            else:
                params[name] = trial.suggest_float(name, *values, log=kind == "log")
        return params

    def to_info(self) -> dict[str, Any]:
        """The searched options and their ranges or choices, for ``bertfit.json``."""
        return {name: {"kind": _KINDS[name], "values": list(getattr(self, name))} for name in self.searched()}


def tune(
    config: TrainConfig,
    train_data: TextDataset | str | Path,
    validation_data: TextDataset | str | Path | None = None,
    *,
    trials: int = 20,
    time_budget: float | None = None,
    space: SearchSpace | None = None,
    pruner=None,
) -> TextClassifier:
    """Search training options on validation and return the best trial's classifier, saved to ``config.output_dir``
    when that is set (see the module docstring for how).

    Args:
        config: The options of every trial, but those drawn from ``space``.
        train_data: Labelled texts, or a file (as :func:`bertfit.train.train` takes).
        validation_data: Labelled texts or a file; default: the stratified ``config.val_size`` split of ``train``.
        trials: Most trials to run.
        time_budget: Seconds after which no trial starts (and a running one stops at its next evaluation); None:
            no limit.
        space: What to search; default :class:`SearchSpace` (with ``config.max_tokens_per_batch``, not
            ``batch_size``).
        pruner: An Optuna pruner; default ``MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS)``.

    Returns:
        The best trial's classifier; ``.card.training.search`` holds the trials' table (a
        :class:`~bertfit.card.SearchRecord`) and ``.card.training.config`` the options that trained it.

    Raises:
        MissingDependencyError: optuna is not installed (``pip install 'bertfit[tune]'``).
        ConfigError: Bad ``trials``, ``time_budget`` or ``space``, or options a search does not take (resume, track,
            several processes).
        OutputExistsError: ``config.output_dir`` holds files and ``config.overwrite`` is False.
        TrainingError: No trial completed (each diverged or was pruned).

    >>> clf = tune(TrainConfig(output_dir="runs/spam-tuned"), "examples/sms_spam.csv", trials=8)  # doctest: +SKIP
    """
    started = _clock()
    optuna = _optuna()
    space = _check(config, trials, time_budget, space or SearchSpace())
    if config.output_dir:
        inputs = (*map(data_source, (train_data, validation_data)), config.model_name_or_path)
        check_output_dir(config.output_dir, config.overwrite, inputs)  # fail before the trials, not after
    base = replace(config, output_dir=None, baselines=False)  # trials write nothing and fit no baselines
    prepared = prepare(base, train_data, validation_data)
    maximize = config.metric_for_best_model != "loss"
    deadline = None if time_budget is None else started + time_budget
    search = _Search(optuna, base, prepared, space, deadline, maximize)
    study = _optimize(optuna, search, trials, pruner)
    fitted = search.best
    if fitted is None:
        counts = _state_counts(search.rows(study))
        raise TrainingError(
            f"no trial completed ({counts}); lower the learning rates searched, or raise --trials / --time-budget"
        )
    record = search.record(study, _clock() - started, time_budget)
    return _finish(fitted, replace(config, **search.best_params), prepared, record)


def _optimize(optuna, search: _Search, trials: int, pruner):
    # The study: the first trial runs whatever the budget; the others start while it lasts (Optuna's timeout).
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial is logged by _Search.log_trial, in bertfit's words
    try:
        study = optuna.create_study(
            direction="maximize" if search.maximize else "minimize",
            sampler=optuna.samplers.TPESampler(seed=search.base.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS) if pruner is None else pruner,
        )
        study.optimize(search.objective, n_trials=1, callbacks=[search.log_trial])
        remaining = None if search.deadline is None else max(search.deadline - _clock(), 0.0)
        if trials > 1 and remaining != 0.0:
            study.optimize(search.objective, n_trials=trials - 1, timeout=remaining, callbacks=[search.log_trial])
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def parse_duration(text: str) -> float:
    """The seconds of a duration such as "90s", "20m", "1h" or "1h30m".

    Raises:
        ConfigError: Not such a duration, or not longer than 0.

    >>> parse_duration("1h30m"), parse_duration("90s"), parse_duration("2.5m")
    (5400.0, 90.0, 150.0)
    """
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise ConfigError(
            f"time budget must be a duration such as 90s, 20m, 1h or 1h30m, got {text!r}; pass e.g. --time-budget 20m"
        )
    seconds = sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise ConfigError(f"time budget must be longer than 0, got {text!r}; pass e.g. --time-budget 20m")
    return seconds


_UNITS = {"s": 1, "m": 60, "h": 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smh])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smh]\s*)+")


def tune_summary(classifier: TextClassifier, output_dir: str | Path | None = None) -> str:
    """What ``bertfit tune`` prints: the trials' table, then what ``bertfit train`` prints for the saved model."""
    search = classifier.card.training.search
    best = next(row for row in search.trials if row["number"] == search.best_trial)
    lines = [
        f"\nHyperparameter search: {len(search.trials)} trials in {search.seconds:.0f} s "
        f"({_state_counts(search.trials)}); trial {search.best_trial} was best, {search.metric} {best['value']:.4f} "
        "(marked *):",
        format_trials(search),
    ]
    return "\n".join(lines) + "\n" + summary(classifier, output_dir)


def format_trials(search: SearchRecord) -> str:
    """The trials' table as fixed-width text, the best trial marked with ``*``."""
    names = list(dict.fromkeys(name for row in search.trials for name in row["params"]))
    table = [["trial", "state", search.metric, *names, "evals", "seconds"]]
    for row in search.trials:
        table.append(
            [
                f"{row['number']}{'*' if row['number'] == search.best_trial else ''}",
                row["state"] if row["state"] != "pruned" else f"pruned ({row.get('pruned_by', 'pruner')})",
                "-" if row["value"] is None else f"{row['value']:.4f}",
                *(_shown(row["params"].get(name)) for name in names),
                str(row["evaluations"]),
                "-" if row["seconds"] is None else f"{row['seconds']:.1f}",
            ]
        )
    width = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(f"{cell:>{w}}" for cell, w in zip(cells, width)) for cells in table)


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


class _Search:
    """The study's objective: trains a trial, reports its evaluations to Optuna, keeps the best trial's model."""

    def __init__(self, optuna, base: TrainConfig, prepared: Prepared, space: SearchSpace, deadline, maximize: bool):
        self.optuna, self.base, self.prepared, self.space = optuna, base, prepared, space
        self.deadline, self.maximize = deadline, maximize
        self.best: Fitted | None = None
        self.best_number: int | None = None
        self.best_params: dict[str, Any] = {}

    def objective(self, trial) -> float:
        params = self.space.suggest(trial)
        config = replace(self.base, **params)
        try:
            fitted = fit(config, self.prepared, on_evaluate=self._reporter(trial), validate=False)
        except TrainingInterrupted:  # SIGINT / SIGTERM: the search stops
            raise
        except TrainingError as err:  # the loss diverged before any evaluation: a failed trial, not a failed search
            trial.set_user_attr("error", str(err))
            return math.nan
        value = fitted.result.best_row["_value"] if fitted.result.best_row else math.nan
        if not math.isnan(value) and (self.best is None or self._better(value)):
            self.best, self.best_number, self.best_params = fitted, trial.number, params
        return value

    def _better(self, value: float) -> bool:
        best = self.best.result.best_row["_value"]
        return value > best if self.maximize else value < best

    def _reporter(self, trial):
        # Reports each evaluation (counted: the k-th falls at the same epoch fraction whatever the batch size) and
        # stops the trial when the pruner or the time budget says so.
        metric = self.base.metric_for_best_model
        evaluations = 0

        def report(row: dict[str, Any]) -> None:
            nonlocal evaluations
            evaluations += 1
            trial.report(row["val_loss"] if metric == "loss" else row.get(metric, math.nan), evaluations)
            if self.deadline is not None and self.best is not None and _clock() >= self.deadline:
                trial.set_user_attr("pruned_by", "time budget")
                raise self.optuna.TrialPruned(f"the time budget was spent at evaluation {evaluations}")
            if trial.should_prune():
                trial.set_user_attr("pruned_by", "pruner")
                raise self.optuna.TrialPruned(f"below the median of the earlier trials at evaluation {evaluations}")

        return report

    def log_trial(self, study, trial) -> None:
        row = self._row(trial)
        value = "no value" if row["value"] is None else f"{self.base.metric_for_best_model} {row['value']:.4f}"
        why = f" by the {row['pruned_by']}" if row.get("pruned_by") else ""
        error = f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else ""
        options = ", ".join(f"{name} {_shown(value)}" for name, value in row["params"].items())
        logger.info(
            "trial %d %s%s%s: %s after %d evaluation(s), %.1f s (%s)",
            row["number"],
            row["state"],
            why,
            error,
            value,
            row["evaluations"],
            row["seconds"] or 0.0,
            options,
        )

    def rows(self, study) -> list[dict[str, Any]]:
        return [self._row(trial) for trial in study.trials if trial.state.is_finished()]

    def _row(self, trial) -> dict[str, Any]:
        states = self.optuna.trial.TrialState
        state = {states.COMPLETE: "complete", states.PRUNED: "pruned"}.get(trial.state, "failed")
        reported = list(trial.intermediate_values.values())
        value = trial.value if state == "complete" else None
        if state == "pruned" and reported:
            value = max(reported) if self.maximize else min(reported)
        start, end = trial.datetime_start, trial.datetime_complete
        row = {
            "number": trial.number,
            "state": state,
            "value": value,
            "params": dict(trial.params),
            "evaluations": len(reported),
            "seconds": round((end - start).total_seconds(), 1) if start and end else None,
        }
        if "pruned_by" in trial.user_attrs:
            row["pruned_by"] = trial.user_attrs["pruned_by"]
        return row

    def record(self, study, seconds: float, time_budget: float | None) -> SearchRecord:
        settings = {
            "sampler": f"TPESampler(seed={self.base.seed})",
            "pruner": type(study.pruner).__name__,
            "space": self.space.to_info(),
        }
        metric = self.base.metric_for_best_model
        return SearchRecord(metric, self.best_number, self.rows(study), round(seconds, 1), time_budget, settings)


def _finish(fitted: Fitted, config: TrainConfig, prepared: Prepared, search: SearchRecord) -> TextClassifier:
    # The best trial's model through the validate and save stages, recorded with the options that trained it:
    # ``config``, the user's options with the trial's (``bertfit train --config`` on them trains it again).
    fitted.config = config
    record = fitted.card.training
    record.config, record.search = config.to_dict(), search
    validate_fitted(fitted, prepared)
    parts = (fitted.model, fitted.tokenizer, fitted.card, fitted.metrics, fitted.records)
    classifier = TextClassifier._from_trained(*parts, fitted.lexical, batch_size=config.eval_batch_size)
    if config.output_dir:
        save_model(config.output_dir, *parts, lexical=fitted.lexical, overwrite=config.overwrite, then="tune again")
    return classifier


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MissingDependencyError.for_extra("bertfit tune", "tune", "optuna") from None
    return optuna


def _state_counts(rows: list[dict[str, Any]]) -> str:
    counts = {state: sum(row["state"] == state for row in rows) for state in ("complete", "pruned", "failed")}
    return ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "none ran"


def _check(config: TrainConfig, trials: int, time_budget: float | None, space: SearchSpace) -> SearchSpace:
    # What a search refuses, before it loads anything; the space without batch_size for token-budget batches.
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"trials must be an integer >= 1, got {trials!r}; pass e.g. --trials 20")
    if time_budget is not None and not (isinstance(time_budget, (int, float)) and time_budget > 0):
        raise ConfigError(f"time_budget must be a number of seconds > 0, got {time_budget!r}")
    refused = {
        "resume": "a search does not resume; drop --resume",
        "track": "a search sends no trials to an experiment tracker (their table is in bertfit.json and the "
        "report); drop --track",
    }
    for name, message in refused.items():
        if getattr(config, name):
            raise ConfigError(message)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("a search runs in one process; start bertfit tune without torchrun / accelerate launch")
    if config.max_tokens_per_batch is not None:
        space = space.without(["batch_size"])
    if not space.searched():
        given = ", ".join(f.name for f in fields(SearchSpace))
        raise ConfigError(f"nothing to search: {given} are all fixed; leave some of them unset")
    return space
