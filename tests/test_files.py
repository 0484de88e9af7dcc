"""Atomic writes: the target appears whole or not at all."""

from __future__ import annotations

import pytest

from bertfit import OutputExistsError
from bertfit.cache import cache_directory
from bertfit.files import atomic_file, check_output_dir


def test_atomic_file_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    with atomic_file(target, newline="") as handle:
        handle.write("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_bertfit_cache_none_turns_the_cache_off(monkeypatch, tmp_path):
    # A run with BERTFIT_CACHE=none once wrote its cache into a folder named "none".
    monkeypatch.setenv("BERTFIT_CACHE", "none")
    assert cache_directory(None) is None
    monkeypatch.setenv("BERTFIT_CACHE", "NONE")
    assert cache_directory(None) is None
    assert cache_directory(str(tmp_path)) == tmp_path / "tokens"  # the flag wins


def test_overwrite_never_deletes_an_input_or_the_current_directory(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / "data").mkdir(parents=True)
    (out / "data" / "train.csv").write_text("text,label\n")
    check_output_dir(out, overwrite=True, inputs=[tmp_path / "elsewhere.csv", "some/hub-id", None])  # nothing inside
    with pytest.raises(OutputExistsError, match=r"would replace .*run and with it .*train\.csv, an input of this run"):
        check_output_dir(out, overwrite=True, inputs=[out / "data" / "train.csv"])
    with pytest.raises(OutputExistsError, match=r"would replace .*run, an input of this run"):
        check_output_dir(out, overwrite=True, inputs=[out])  # e.g. --model and --output-dir the same directory
    monkeypatch.chdir(out / "data")
    with pytest.raises(OutputExistsError, match=r"with it .*data, the current directory"):
        check_output_dir(out, overwrite=True)
    assert (out / "data" / "train.csv").exists()


def test_train_with_overwrite_keeps_the_data_file_inside_the_output_dir(tiny_config, sentiment_csv, tmp_path):
    from bertfit import train

    out = tmp_path / "run"
    out.mkdir()
    data = out / "train.csv"
    data.write_bytes(sentiment_csv.read_bytes())
    with pytest.raises(OutputExistsError, match="an input of this run"):
        train(tiny_config(output_dir=str(out), overwrite=True), str(data))
    assert data.read_bytes() == sentiment_csv.read_bytes()
