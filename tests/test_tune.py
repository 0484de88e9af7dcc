"""bertfit tune: trials on the split of train, pruning, the time budget, the saved best trial, the CLI."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from bertfit.card import ModelCard, read_model_files
from bertfit.exceptions import ConfigError, MissingDependencyError
from bertfit.tune import SearchSpace, parse_duration, tune

optuna = pytest.importorskip("optuna")

# Ranges in which the tiny random BERT learns the sentiment data in a few steps.
TINY_SPACE = SearchSpace(learning_rate=(1e-3, 1e-2), epochs=(1, 2), batch_size=(8, 16), warmup_ratio=(0.0, 0.1))


class _PruneAllButFirst(optuna.pruners.BasePruner):
    """Prunes every trial after the first at its first evaluation."""

    def prune(self, study, trial) -> bool:
        return trial.number > 0


def test_the_best_trial_is_saved_with_its_options_and_the_table(tiny_config, sentiment_csv, tmp_path):
    from bertfit.model import load_classifier
    from bertfit.pipeline import prepare_data

    out = tmp_path / "tuned"
    config = tiny_config(output_dir=str(out))
    clf = tune(config, sentiment_csv, trials=3, space=TINY_SPACE)

    search = clf.card.training.search
    assert [row["number"] for row in search.trials] == [0, 1, 2]
    complete = [row for row in search.trials if row["state"] == "complete"]
    best = max(complete, key=lambda row: row["value"])
    assert search.best_trial == best["number"]
    saved = read_model_files(out).card
    assert saved.training.search.to_info() == search.to_info()
    options = saved.training.config
    assert {name: options[name] for name in best["params"]} == best["params"]
    assert saved.training.best.value == pytest.approx(best["value"])  # the saved state is the trial's best
    # The trials ran on the split that bertfit train makes with the same options.
    train_ds, val_ds, _ = prepare_data(config, sentiment_csv, None)
    assert saved.training.train_data.fingerprint == train_ds.fingerprint()
    assert saved.training.validation_data.fingerprint == val_ds.fingerprint()
    loaded = load_classifier(out)
    texts = ["the film was good", "it was quite awful"]
    assert loaded.predict(texts) == clf.predict(texts)
    assert set(loaded.predict(texts)) <= {"neg", "pos"}
    assert "Hyperparameter search" in (out / "report.html").read_text(encoding="utf-8")


def test_the_saved_trial_is_the_model_train_gives_with_its_options(tiny_config, sentiment_csv):
    from bertfit import train

    clf = tune(tiny_config(), sentiment_csv, trials=2, space=TINY_SPACE)
    search = clf.card.training.search
    params = next(row["params"] for row in search.trials if row["number"] == search.best_trial)
    assert set(params) == set(TINY_SPACE.searched())
    trained = train(tiny_config(**params), sentiment_csv)  # same seed, split, windows and options: same run

    def curve(history):
        return [(row["epoch"], row["step"], row["val_loss"], row["accuracy"]) for row in history]

    assert curve(clf.card.training.history) == curve(trained.card.training.history)
    assert clf.metrics["accuracy"] == trained.metrics["accuracy"]


def test_a_pruned_trial_stops_at_its_first_evaluation(tiny_config, sentiment_csv):
    space = replace(TINY_SPACE, epochs=(3, 3))  # three evaluations per complete trial
    clf = tune(tiny_config(), sentiment_csv, trials=3, space=space, pruner=_PruneAllButFirst())
    rows = clf.card.training.search.trials
    assert rows[0]["state"] == "complete" and rows[0]["evaluations"] == 3
    for row in rows[1:]:
        assert row["state"] == "pruned" and row["pruned_by"] == "pruner"
        assert row["evaluations"] == 1  # training stopped at the first of its three evaluations
        assert row["value"] is not None
    assert clf.card.training.search.best_trial == 0


def test_the_time_budget_starts_no_trial_once_spent(tiny_config, sentiment_csv):
    clf = tune(tiny_config(), sentiment_csv, trials=5, time_budget=1e-3, space=TINY_SPACE)
    rows = clf.card.training.search.trials
    assert len(rows) == 1 and rows[0]["state"] == "complete"  # the first trial always completes
    assert clf.card.training.search.time_budget == 1e-3


def test_the_time_budget_stops_a_running_trial_at_its_next_evaluation(tiny_config, sentiment_csv, monkeypatch):
    import bertfit.tune as tune_module

    clock = [0.0]
    monkeypatch.setattr(tune_module, "_clock", lambda: clock[0])

    class SpendTheBudgetInTheSecondTrial(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            if trial.number == 1:
                clock[0] = 1e9
            return False

    space = replace(TINY_SPACE, epochs=(3, 3))
    pruner = SpendTheBudgetInTheSecondTrial()
    clf = tune(tiny_config(), sentiment_csv, trials=2, time_budget=3600, space=space, pruner=pruner)
    first, second = clf.card.training.search.trials
    assert first["state"] == "complete" and first["evaluations"] == 3
    assert second["state"] == "pruned" and second["pruned_by"] == "time budget"
    assert second["evaluations"] == 2  # it stopped at the evaluation after the budget was spent


def test_options_that_cannot_be_searched_are_refused(tiny_config, sentiment_csv):
    with pytest.raises(ConfigError, match="nothing to search"):
        tune(tiny_config(), sentiment_csv, trials=2, space=SearchSpace().without(SearchSpace().searched()))
    with pytest.raises(ConfigError, match="trials must be"):
        tune(tiny_config(), sentiment_csv, trials=0)
    with pytest.raises(ConfigError, match="resume"):
        tune(tiny_config(resume=True, output_dir="x"), sentiment_csv, trials=2)
    with pytest.raises(ConfigError, match="low <= high"):
        SearchSpace(learning_rate=(1e-3, 1e-4))
    with pytest.raises(ConfigError, match="choices"):
        SearchSpace(batch_size=())
    with pytest.raises(ConfigError, match="learning_rate"):
        SearchSpace(learning_rate=(0.0, 1e-3))
    with pytest.raises(ConfigError, match="'none' and 'balanced'"):
        SearchSpace(class_weights=("none", {"pos": 2.0}))


def test_durations():
    assert parse_duration("20m") == 1200
    assert parse_duration("90s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration(" 1h30m ") == 5400
    for bad in ("20", "abc", "0s", "-5m", "", "1d", "m"):
        with pytest.raises(ConfigError, match="time budget"):
            parse_duration(bad)


def test_a_missing_optuna_names_the_extra(tiny_config, sentiment_csv, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'bertfit\[tune\]'"):
        tune(tiny_config(), sentiment_csv, trials=2)


def test_a_card_with_a_search_reads_back_and_one_without_has_none(trained_dir):
    info = json.loads((trained_dir / "bertfit.json").read_text(encoding="utf-8"))
    assert "search" not in info and ModelCard.from_info(info).training.search is None
    from bertfit.card import SearchRecord

    rows = [
        {"number": 0, "state": "complete", "value": 0.9, "params": {"epochs": 2}, "evaluations": 2, "seconds": 1.0}
    ]
    card = ModelCard.from_info(info)
    card.training.search = SearchRecord("macro_f1", 0, rows, 1.5, None, {"pruner": "MedianPruner"})
    assert ModelCard.from_info(card.to_info()).training.search == card.training.search


def _cli(args):
    from bertfit.cli import app

    return CliRunner().invoke(app, args)


def test_cli_tune_keeps_the_given_options_fixed(tiny_model_dir, sentiment_csv, tmp_path):
    out = tmp_path / "tuned"
    fixed = ["--epochs", "1", "--batch-size", "8", "--lr", "5e-3", "--precision", "fp32", "--evals-per-epoch", "1"]
    args = ["tune", "--data", str(sentiment_csv), "--model", str(tiny_model_dir), "--trials", "2", "--quiet"]
    result = _cli([*args, *fixed, "--no-baselines", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "Hyperparameter search: 2 trials" in result.output
    card = read_model_files(out).card
    assert card.training.config["epochs"] == 1 and card.training.config["learning_rate"] == 5e-3
    assert card.training.config["batch_size"] == 8
    assert set(card.training.search.settings["space"]) == {"warmup_ratio", "class_weights"}
    assert all(set(row["params"]) == {"warmup_ratio", "class_weights"} for row in card.training.search.trials)


def test_cli_tune_refuses_a_bad_time_budget(sentiment_csv):
    result = _cli(["tune", "--data", str(sentiment_csv), "--time-budget", "20 minutes"])
    assert result.exit_code == 3
    assert "ConfigError: time budget must be a duration" in result.stderr
    assert "Traceback" not in result.output


def test_cli_tune_help_lists_its_own_and_the_training_options():
    result = _cli(["tune", "--help"])
    assert result.exit_code == 0
    for flag in ("--trials", "--time-budget", "--lr", "--validation", "--output-dir", "--class-weights"):
        assert flag in result.output
