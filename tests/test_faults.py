"""Faults of real processes: kill -9 during training, a checkpoint write or the final save, then --resume; SIGTERM and
a second SIGINT; a full disk (a small tmpfs, where this machine allows mounting one); leftovers of killed writers;
file permissions; the tokenization cache's size cap; weights that are damaged or pickle-only."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import sentiment_rows, write_csv
from typer.testing import CliRunner

from bertfit import TextClassifier
from bertfit.cli import app

DRIVER = Path(__file__).with_name("fault_driver.py")
SMALL = ["--epochs", "4", "--batch-size", "8", "--lr", "5e-3", "--precision", "fp32", "--no-baselines", "--quiet"]


@pytest.fixture
def data(tmp_path) -> Path:
    return write_csv(tmp_path / "train.csv", sentiment_rows())


def _start(args: list[str], point: str, marker: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "FAULT_POINT": point, "FAULT_MARKER": str(marker), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(DRIVER), *args]
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the fault point was not reached"
        time.sleep(0.05)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _train_args(data: Path, model_dir: Path, tiny_model_dir: Path) -> list[str]:
    return ["train", "--data", str(data), "--model", str(tiny_model_dir), "--output-dir", str(model_dir), *SMALL]


@pytest.mark.parametrize("point", [f"training:{random.Random(7).randint(15, 50)}", "checkpoint", "save"])
def test_kill_9_then_resume_gives_a_complete_model_and_no_leftovers(data, tmp_path, tiny_model_dir, point):
    model_dir = tmp_path / "runs" / "model"
    marker = tmp_path / "marker"
    args = _train_args(data, model_dir, tiny_model_dir)
    process = _start(args, point, marker, tmp_path)
    _wait_for(marker, process)
    process.kill()  # SIGKILL: no handler, no cleanup
    process.wait()
    assert not model_dir.exists()
    assert ".model.checkpoint" in _leftovers(model_dir.parent)

    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resumed from the checkpoint at step" in result.output
    assert _leftovers(model_dir.parent) == []  # the dead writer's staging copy was reclaimed, the checkpoint removed
    assert json.loads((model_dir / "bertfit.json").read_text())["history"]
    assert TextClassifier.from_pretrained(model_dir).predict("the film was superb") in {"pos", "neg"}


def test_a_kill_before_the_first_checkpoint_says_to_start_over(data, tmp_path, tiny_model_dir):
    model_dir = tmp_path / "model"
    marker = tmp_path / "marker"
    args = _train_args(data, model_dir, tiny_model_dir)
    process = _start(args, "training:3", marker, tmp_path)
    _wait_for(marker, process)
    process.kill()
    process.wait()
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert (
        result.exit_code == 3 and "no checkpoint to resume from" in result.output and "Traceback" not in result.output
    )
    assert CliRunner().invoke(app, args).exit_code == 0


def test_sigterm_checkpoints_and_exits_143_then_resume_finishes(data, tmp_path, tiny_model_dir):
    model_dir = tmp_path / "model"
    marker = tmp_path / "marker"
    args = _train_args(data, model_dir, tiny_model_dir)
    process = _start(args, "slow", marker, tmp_path)
    _wait_for(marker, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "TrainingInterrupted: training was interrupted at step" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert _leftovers(tmp_path) == []


def test_a_second_sigint_exits_at_once(data, tmp_path, tiny_model_dir):
    marker = tmp_path / "marker"
    process = _start(_train_args(data, tmp_path / "model", tiny_model_dir), "slow", marker, tmp_path)
    _wait_for(marker, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)  # inside the same 0.5 s step
    process.send_signal(signal.SIGINT)
    start = time.monotonic()
    process.communicate(timeout=60)
    assert process.returncode == 130
    assert time.monotonic() - start < 5


def test_a_full_disk_ends_in_one_line_and_resumes_when_space_is_free(data, tmp_path, tiny_model_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not permitted'})")
    try:
        args = _train_args(data, disk / "model", tiny_model_dir)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 3, result.output
        assert "StorageError: no space left on the device of" in result.output and "needs about" in result.output
        assert "Traceback" not in result.output
        assert not (disk / "model").exists()
        assert [p for p in disk.rglob("*") if ".tmp-" in p.name] == []  # no half-written file stays
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space is freed
        written = (disk / ".model.checkpoint" / "run.json").exists()  # else the first checkpoint did not fit
        resumed = CliRunner().invoke(app, [*args, "--resume"] if written else args)
        assert resumed.exit_code == 0, resumed.output
        assert (disk / "model" / "model.safetensors").is_file() and _leftovers(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_stale_staging_of_dead_writers_is_reclaimed_and_live_ones_kept(tmp_path):
    from bertfit.files import atomic_file, remove_stale_staging

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".out.csv.tmp-{dead_pid}-abc").write_text("half")
    (tmp_path / f".model.tmp-{dead_pid}-xyz").mkdir()
    (tmp_path / f".model.tmp-{os.getpid()}-live").mkdir()  # this process: still writing
    with atomic_file(tmp_path / "out.csv") as handle:
        handle.write("text\n")
    assert not (tmp_path / f".out.csv.tmp-{dead_pid}-abc").exists()
    assert [p.name for p in remove_stale_staging(tmp_path / "model")] == [f".model.tmp-{dead_pid}-xyz"]
    assert (tmp_path / f".model.tmp-{os.getpid()}-live").is_dir()


def test_written_files_follow_the_umask(trained_dir, tmp_path):
    previous = os.umask(0o027)
    try:
        TextClassifier.from_pretrained(trained_dir).save_pretrained(tmp_path / "model")
        from bertfit.files import atomic_file

        with atomic_file(tmp_path / "out.csv") as handle:
            handle.write("x")
    finally:
        os.umask(previous)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "model" / "bertfit.json").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o640


def test_the_tokenization_cache_keeps_to_its_size_by_evicting_the_least_recently_used(
    tiny_model_dir, tmp_path, monkeypatch
):
    from transformers import AutoTokenizer

    from bertfit.cache import cache_directory, cache_entries, tokenize_cached

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = [text for text, _ in sentiment_rows(300)]
    cache = cache_directory(str(tmp_path))
    tokenize_cached(tokenizer, texts, 16, cache)
    (first,) = cache_entries(cache)
    monkeypatch.setenv("BERTFIT_CACHE_SIZE", str(int(first.stat().st_size * 2.5)))  # room for two entries
    for batch in (texts[:-1], texts, texts[:-2]):  # a second entry; a hit on the first; a third entry
        time.sleep(0.02)
        tokenize_cached(tokenizer, batch, 16, cache)
    remaining = cache_entries(cache)
    assert len(remaining) == 2 and first in remaining  # the least recently used one (the second) went

    result = CliRunner().invoke(app, ["cache", "info", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0 and "2 entries" in result.output
    result = CliRunner().invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0 and "removed 2 entries" in result.output and cache_entries(cache) == []


def test_damaged_or_pickle_only_weights_are_a_model_error(trained_dir, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for command in (["predict", str(damaged), "hello"], ["evaluate", str(damaged), "--data", str(trained_dir)]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 3, result.output
        assert "ModelError: the weights of model" in result.output and "model.safetensors" in result.output
        assert "Traceback" not in result.output

    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled"
    shutil.copytree(trained_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    result = CliRunner().invoke(app, ["predict", str(pickled), "hello"])
    assert result.exit_code == 3 and "pickle-based weights (pytorch_model.bin)" in result.output
    assert "--allow-pickle" in result.output
    result = CliRunner().invoke(app, ["predict", str(pickled), "hello", "--allow-pickle"])
    assert result.exit_code == 0, result.output
