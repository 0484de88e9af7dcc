"""Atomic writes: the target appears whole or not at all."""

from __future__ import annotations

import pytest

from bertfit.cache import cache_directory
from bertfit.files import atomic_file


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
