"""Runs ``bertfit`` with a fault point armed, for tests/test_faults.py (not a test module itself).

Environment: ``FAULT_POINT`` is ``training:<step>`` (pause after that optimizer step), ``checkpoint`` (pause half-way
through writing a checkpoint file), ``save`` (pause half-way through writing the model directory) or ``slow`` (every
step sleeps 0.5 s); ``FAULT_MARKER`` is a file written when the pause begins, so that the test knows when to kill.
The arguments are those of the ``bertfit`` command.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _pause() -> None:
    Path(os.environ["FAULT_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)  # until the test kills this process


def _arm(point: str) -> None:
    import torch

    import bertfit.card
    import bertfit.save
    import bertfit.trainer

    if point.startswith("training:"):
        target = int(point.split(":")[1])
        original = bertfit.trainer._Loop._step

        def step(self, indices):
            original(self, indices)
            if self.step == target:
                _pause()

        bertfit.trainer._Loop._step = step
    elif point == "checkpoint":
        calls = {"n": 0}
        original_save = torch.save

        def save(value, handle, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:  # the second checkpoint: the first one is complete on disk
                handle.write(b"a partial checkpoint")
                _pause()
            return original_save(value, handle, *args, **kwargs)

        torch.save = save
    elif point == "save":
        original_files = bertfit.card.write_model_files

        def write(directory, *args, **kwargs):
            (Path(directory) / "bertfit.json").write_text("{partial")
            _pause()
            return original_files(directory, *args, **kwargs)

        bertfit.save.write_model_files = write
    elif point == "slow":
        original = bertfit.trainer._Loop._step

        def slow(self, indices):
            original(self, indices)
            Path(os.environ["FAULT_MARKER"]).write_text(str(os.getpid()))
            time.sleep(0.5)

        bertfit.trainer._Loop._step = slow


if __name__ == "__main__":
    _arm(os.environ.get("FAULT_POINT", ""))
    from bertfit.cli import main

    sys.argv = ["bertfit", *sys.argv[1:]]
    main()
