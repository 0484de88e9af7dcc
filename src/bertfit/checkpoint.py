"""Checkpoints of a training run, so that a crash, a kill or a full disk never costs the training done.

At an evaluation once :func:`bertfit.trainer.checkpoint_seconds` passed since the last checkpoint or the start (60 s;
``$BERTFIT_CHECKPOINT_SECONDS=0``: every evaluation), and when SIGINT or SIGTERM stops a run, the whole training
state is written beside the output directory, in ``.<output name>.checkpoint/``:

- ``latest.pt``: the weights, the optimizer's and the learning-rate schedule's state, the row-sparse embedding
  optimizer's state, the random-number generators, the position in the epoch, the per-evaluation history, the
  early-stopping counters and the timings: everything the loop needs to continue exactly where it stopped;
- ``best.pt``: the best evaluated weights and that evaluation's validation logits (written when they change);
- ``run.json``: what identifies the run (the data fingerprints and the options), its step, and the files' sizes.

Each file is written to a temporary name and renamed into place (``run.json`` last), so a kill during a write leaves
the previous checkpoint whole. ``bertfit train ... --resume`` reads it back, refusing when the data or the options
differ; a run that saved its model removes the folder. Under DDP rank 0 writes and every rank reads.
"""

from __future__ import annotations

import errno
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ConfigError, StorageError
from .files import atomic_file, read_json

__all__ = ["Checkpointer", "checkpoint_dir", "storage_error", "estimate_bytes", "RESUMABLE_OPTIONS"]

logger = logging.getLogger(__name__)

# Options that may differ between an interrupted run and its --resume: they do not change the training trajectory.
RESUMABLE_OPTIONS = (
    "resume",
    "overwrite",
    "output_dir",
    "track",
    "tracking_uri",
    "cache_dir",
    "baselines",
    "threshold_metric",
    "eval_batch_size",
    "trust_remote_code",
    "allow_pickle",
    "push_to_hub",
    "hub_private",
)


def checkpoint_dir(output_dir: str | Path) -> Path:
    """Where the checkpoints of a run writing ``output_dir`` live: ``.<name>.checkpoint`` beside it."""
    output_dir = Path(output_dir).absolute()
    return output_dir.parent / f".{output_dir.name}.checkpoint"


@dataclass
class Checkpointer:
    """Writes and reads the checkpoints of one run.

    Args:
        directory: The checkpoint folder (:func:`checkpoint_dir`).
        identity: What must be equal for a run to resume this one: ``{"data": {...}, "options": {...}}``.
    """

    directory: Path
    identity: dict[str, Any]
    seconds: float = 0.0  # time spent writing checkpoints in this process
    writes: int = 0
    bytes: int = 0  # size of the last checkpoint (latest + best)

    def exists(self) -> bool:
        return (self.directory / "run.json").is_file()

    def save(self, state: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Write ``state`` as the latest checkpoint and ``best`` (when given: it changed) as the best one.

        Raises:
            StorageError: The disk is full or not writable; the previous checkpoint is left whole.
        """
        import torch

        start = time.perf_counter()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for name, value in (("best.pt", best), ("latest.pt", state)):
                if value is not None:
                    with atomic_file(self.directory / name, "wb") as handle:
                        torch.save(value, handle)
            sizes = {
                name: (self.directory / name).stat().st_size
                for name in ("latest.pt", "best.pt")
                if (self.directory / name).is_file()
            }
            with atomic_file(self.directory / "run.json") as handle:
                handle.write(_json({**self.identity, "step": state["step"], "bytes": sizes}))
        except OSError as err:
            needed = estimate_bytes(state, best)
            then = "resume from the last checkpoint written whole (run the same command with --resume)"
            raise storage_error(err, self.directory, "a checkpoint", needed, then) from None
        self.seconds += time.perf_counter() - start
        self.writes += 1
        self.bytes = sum(sizes.values())

    def load(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The latest state and the best one, after checking that this run may resume them.

        Raises:
            ConfigError: There is no checkpoint, or its data or options differ from this run's.
        """
        import torch

        if not self.exists():
            raise ConfigError(
                f"there is no checkpoint to resume from at {self.directory}; run without --resume to start over"
            )
        saved = read_json(self.directory / "run.json")
        self._check(saved)
        state = torch.load(self.directory / "latest.pt", map_location="cpu", weights_only=False)
        best_file = self.directory / "best.pt"
        best = torch.load(best_file, map_location="cpu", weights_only=False) if best_file.is_file() else None
        return state, best

    def _check(self, saved: dict[str, Any]) -> None:
        data = [
            f"the {split} data ({saved['data'].get(split)} -> {self.identity['data'].get(split)})"
            for split in sorted(set(saved["data"]) | set(self.identity["data"]))
            if saved["data"].get(split) != self.identity["data"].get(split)
        ]
        before, now = saved["options"], self.identity["options"]
        options = [
            f"{key} {before.get(key)!r} -> {now.get(key)!r}"
            for key in sorted(set(before) | set(now))
            if key not in RESUMABLE_OPTIONS and before.get(key) != now.get(key)
        ]
        if data or options:
            raise ConfigError(
                f"cannot resume the run checkpointed at {self.directory}: "
                + "; ".join(
                    ([f"it was trained on other data: {', '.join(data)}"] if data else [])
                    + ([f"its options differ: {', '.join(options)}"] if options else [])
                )
                + ". Run the interrupted command again with --resume, or leave --resume out to start over"
            )

    def remove(self) -> None:
        """Delete the folder (the run saved its model)."""
        shutil.rmtree(self.directory, ignore_errors=True)


RESUME_HINT = "run the same command with --resume (the training done so far is kept in its checkpoint)"


def storage_error(err: OSError, path: Path, what: str, needed_bytes: int, then: str = "try again") -> StorageError:
    """The one-line error of a write that failed: which path, why, and for a full disk the space needed and free;
    ``then`` says what to do after freeing space."""
    if err.errno == errno.ENOSPC:
        free = shutil.disk_usage(_existing(path)).free
        return StorageError(
            f"no space left on the device of {path} while writing {what}: it needs about {_mb(needed_bytes)} and "
            f"{_mb(free)} is free; free some space and {then}"
        )
    return StorageError(f"could not write {what} to {path}: {err.strerror or err}; check the path and its permissions")


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def estimate_bytes(*values: Any) -> int:
    # Bytes of the tensors in nested dicts and lists: what torch.save will write, give or take the pickle framing.
    import torch

    def size(value: Any) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(v) for v in value)
        return 0

    return sum(size(value) for value in values)


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n"
