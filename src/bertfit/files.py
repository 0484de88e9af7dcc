"""Atomic writes: a file or a directory appears complete or not at all, and what was there before stays until then.

Every writer of bertfit goes through these two: the model directory (:func:`atomic_directory`), and single files such
as prediction outputs, rebuilt reports, checkpoints and tokenization-cache entries (:func:`atomic_file`). A crash, a
full disk or an exception in the block leaves the target as it was and removes the staging copy. A process killed
with SIGKILL cannot remove it: staging names carry the writer's process id, and the next write to the same target
removes the staging copies of processes that no longer run. What appears gets the permissions the user's umask gives
(the staging copies are private while they are written).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from .exceptions import OutputExistsError

__all__ = ["atomic_directory", "atomic_file", "check_output_dir", "remove_stale_staging", "write_json", "read_json"]


def check_output_dir(path: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> None:
    """Refuse an existing non-empty directory (or a file) at ``path`` unless ``overwrite``; with ``overwrite``,
    refuse it when replacing it would delete one of ``inputs`` (files or directories the run reads; names that are
    not local paths, such as hub ids, are skipped) or the current directory.

    Raises:
        OutputExistsError: ``path`` holds files and ``overwrite`` is False, is a file, or holds an input.
    """
    path = Path(path)
    if path.is_file():
        raise OutputExistsError(f"output path {path} is a file; choose a directory with --output-dir")
    if not path.is_dir() or not any(path.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(
            f"output directory {path} already exists and is not empty; pass --overwrite to "
            "replace it or choose another --output-dir"
        )
    root = path.resolve()
    named = [(Path(p), "an input of this run") for p in inputs if p] + [(Path("."), "the current directory")]
    for inside, what in named:
        if not inside.exists() or (inside.resolve() != root and root not in inside.resolve().parents):
            continue
        lost = f"{path}, {what}" if inside.resolve() == root else f"{path} and with it {inside.resolve()}, {what}"
        raise OutputExistsError(f"--overwrite would replace {lost}; choose another --output-dir")


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool, inputs: Iterable[str | Path | None] = ()) -> Iterator[Path]:
    """Yield a staging directory beside ``path`` that replaces ``path`` only when the block succeeds.

    >>> with atomic_directory("runs/spam", overwrite=True) as staging:  # doctest: +SKIP
    ...     (staging / "config.json").write_text("{}")

    Raises:
        OutputExistsError: As :func:`check_output_dir` (``inputs`` as there).
    """
    path = Path(path).absolute()
    check_output_dir(path, overwrite, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(path, "tmp"), dir=path.parent))
    try:
        yield staging
        _apply_umask(staging, directory=True)
        if path.exists():
            trash = Path(tempfile.mkdtemp(prefix=_staging_prefix(path, "old"), dir=path.parent))
            os.replace(path, trash / path.name)
            os.replace(staging, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; it replaces ``path`` only when the block succeeds.

    ``mode`` is ``"w"`` (text; ``open_args`` such as ``encoding`` and ``newline`` go to :func:`open`, UTF-8 by
    default) or ``"wb"``.

    >>> with atomic_file("out.csv", newline="") as handle:  # doctest: +SKIP
    ...     handle.write("text,label\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    fd, tmp = tempfile.mkstemp(prefix=_staging_prefix(path, "tmp"), dir=path.parent)
    if "b" not in mode:
        open_args.setdefault("encoding", "utf-8")
    try:
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
        _apply_umask(Path(tmp), directory=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _staging_prefix(path: Path, kind: str) -> str:
    return f".{path.name}.{kind}-{os.getpid()}-"


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Remove the staging copies beside ``path`` left by writers that no longer run (killed with SIGKILL, or a
    machine that went down); returns what was removed. Copies of running processes, this one's included, stay."""
    path = Path(path).absolute()
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)-")
    removed = []
    for candidate in path.parent.glob(f".{glob_escape(path.name)}.*"):
        match = pattern.match(candidate.name)
        if match and not _running(int(match.group(1))):
            if candidate.is_dir():
                shutil.rmtree(candidate, ignore_errors=True)
            else:
                candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob's special characters escaped."""
    return re.sub(r"([\[\]*?])", r"[\1]", name)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def _umask() -> int:
    # Read without changing it where the system says it (Linux); else the classic set-and-restore.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _apply_umask(path: Path, directory: bool) -> None:
    # mkdtemp and mkstemp create private (0700 / 0600) staging copies; what appears gets the user's usual mode.
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented UTF-8 JSON (used inside a staging directory, which makes it atomic)."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    """The JSON value stored in ``path``."""
    return json.loads(path.read_text(encoding="utf-8"))
