"""Checkpoints and --resume: an interrupted run continues to the model an uninterrupted one gives, and refuses to
resume on other data or options."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import torch
from conftest import sentiment_rows

from bertfit import ConfigError, TextDataset, train
from bertfit.checkpoint import checkpoint_dir
from bertfit.exceptions import StorageError, TrainingInterrupted


def _dataset(n: int = 120, seed: int = 0) -> TextDataset:
    rows = sentiment_rows(n, seed)
    return TextDataset([t for t, _ in rows], [label for _, label in rows])


def _interrupt_at(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    # Sends this process a signal once the loop finished optimizer step ``step``.
    import bertfit.trainer as trainer

    original = trainer._Loop._step

    def step_then_signal(self, indices):
        original(self, indices)
        if self.step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(trainer._Loop, "_step", step_then_signal)


def _same_weights(a, b) -> None:
    first, second = a.model_.state_dict(), b.model_.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=1e-6)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_resumes_to_the_uninterrupted_model(tiny_config, tmp_path, monkeypatch, signum):
    data = _dataset()
    whole = train(tiny_config(output_dir=str(tmp_path / "whole")), data)
    _interrupt_at(monkeypatch, 20, signum)  # in the second of 5 epochs of 14 steps, between evaluations
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 20 of 70 .*--resume") as caught:
        train(tiny_config(output_dir=str(tmp_path / "model")), data)
    assert caught.value.exit_code == 128 + signum and caught.value.step == 20
    folder = checkpoint_dir(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "latest.pt", "run.json"]
    assert not (tmp_path / "model").exists()  # nothing half-written
    monkeypatch.undo()

    resumed = train(tiny_config(output_dir=str(tmp_path / "model"), resume=True), data)
    _same_weights(whole, resumed)
    assert [row["train_loss"] for row in resumed.info_["history"]] == [
        row["train_loss"] for row in whole.info_["history"]
    ]
    assert resumed.metrics == whole.metrics
    assert not folder.exists()  # a finished run removes its checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "whole"]


def test_resume_refuses_other_data_or_options(tiny_config, tmp_path, monkeypatch):
    _interrupt_at(monkeypatch, 5)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(output_dir=str(tmp_path / "model")), _dataset())
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"its options differ: learning_rate 0.005 -> 0.001"):
        train(tiny_config(output_dir=str(tmp_path / "model"), resume=True, learning_rate=1e-3), _dataset())
    with pytest.raises(ConfigError, match="it was trained on other data: the train data"):
        train(tiny_config(output_dir=str(tmp_path / "model"), resume=True), _dataset(seed=1))
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        train(tiny_config(output_dir=str(tmp_path / "other"), resume=True), _dataset())
    # Options that do not change the training may differ.
    clf = train(tiny_config(output_dir=str(tmp_path / "model"), resume=True, threshold_metric="none"), _dataset())
    assert clf.threshold is None


def test_a_full_disk_at_save_keeps_the_training_for_a_resume(tiny_config, tmp_path, monkeypatch):
    import bertfit.save

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bertfit.save, "write_model_files", full)
    with pytest.raises(StorageError, match=r"no space left .* needs about \d+ [KM]iB and .* free.*--resume"):
        train(tiny_config(output_dir=str(tmp_path / "model"), epochs=2), _dataset())
    assert not (tmp_path / "model").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".model.checkpoint"]  # no half-written staging copy
    monkeypatch.undo()

    import bertfit.trainer as trainer

    monkeypatch.setattr(trainer._Loop, "_step", lambda self, indices: pytest.fail("trained again"))
    clf = train(tiny_config(output_dir=str(tmp_path / "model"), epochs=2, resume=True), _dataset())
    assert [row["epoch"] for row in clf.info_["history"]] == [1, 2]
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_full_disk_while_checkpointing_names_the_path(tiny_config, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(StorageError, match=r"\.model\.checkpoint while writing a checkpoint: it needs about"):
        train(tiny_config(output_dir=str(tmp_path / "model"), epochs=1), _dataset())


def test_training_without_an_output_directory_writes_no_checkpoint(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    clf = train(tiny_config(epochs=1), _dataset())
    assert list(tmp_path.iterdir()) == [] and "checkpoints" not in clf.info_
    with pytest.raises(ConfigError, match="resume needs the output directory"):
        train(tiny_config(epochs=1, resume=True), _dataset())


def test_checkpoint_cost_is_recorded(tiny_config, tmp_path):
    clf = train(tiny_config(output_dir=str(tmp_path / "model"), epochs=2), _dataset())
    cost = clf.info_["checkpoints"]
    assert cost["writes"] == 2 and cost["seconds"] >= 0 and cost["bytes"] > 0


def test_checkpoints_wait_for_the_interval_but_a_signal_always_writes_one(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("BERTFIT_CHECKPOINT_SECONDS", "3600")  # longer than the run: no evaluation writes one
    clf = train(tiny_config(output_dir=str(tmp_path / "model"), epochs=2), _dataset())
    assert clf.info_["checkpoints"]["writes"] == 0

    from bertfit import trainer

    original = trainer._Loop._step

    def step_then_sigint(self, indices):  # as a Ctrl-C during the third step
        original(self, indices)
        if self.step == 3:
            self._signal = signal.SIGINT

    monkeypatch.setattr(trainer._Loop, "_step", step_then_sigint)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(output_dir=str(tmp_path / "again"), epochs=2), _dataset())
    assert (checkpoint_dir(tmp_path / "again") / "latest.pt").is_file()


@pytest.mark.parametrize(("value", "expected"), [("", 60.0), ("0", 0.0), (" 12.5 ", 12.5), ("-1", 0.0)])
def test_checkpoint_interval_comes_from_the_environment(monkeypatch, value, expected):
    from bertfit.trainer import checkpoint_seconds

    monkeypatch.setenv("BERTFIT_CHECKPOINT_SECONDS", value)
    assert checkpoint_seconds() == expected


def test_a_bad_checkpoint_interval_names_the_variable(monkeypatch):
    from bertfit.trainer import checkpoint_seconds

    monkeypatch.setenv("BERTFIT_CHECKPOINT_SECONDS", "often")
    with pytest.raises(ConfigError, match="BERTFIT_CHECKPOINT_SECONDS='often' is not a number"):
        checkpoint_seconds()
