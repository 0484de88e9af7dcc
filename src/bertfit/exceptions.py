"""The errors bertfit raises on bad input, each with a message that names the problem and the fix.

BertfitError                      base class; the CLI prints "ErrorName: message" and exits with code 3
 ├── DataError (ValueError)       a data file that cannot be read or used as labelled text
 ├── ConfigError (ValueError)     an invalid training option or config file
 ├── ModelError (OSError)         a model directory or hub id that cannot be loaded
 ├── OutputExistsError            the output directory exists and holds files; pass overwrite=True
 │    (FileExistsError)
 ├── NotFittedError               predict/save before fit or from_pretrained
 │    (ValueError, AttributeError)
 ├── MissingDependencyError       an optional extra is not installed; the message gives the pip line
 │    (ImportError)
 ├── TrainingError                training went wrong (the loss became NaN or infinite); the best state so far
 │    (RuntimeError)              was saved when there was one
 │    └── TrainingInterrupted     SIGINT/SIGTERM stopped training after a checkpoint; exit code 130/143
 ├── StorageError (OSError)       a model or checkpoint could not be written (the disk is full or read-only);
 │                                the message names the path and the space needed
 └── HubError (OSError)           a model directory could not be uploaded to the Hugging Face Hub (no token,
                                  refused, unreachable); it stays saved locally, the message gives the retry command
"""

from __future__ import annotations

__all__ = [
    "BertfitError",
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "ModelError",
    "NotFittedError",
    "OutputExistsError",
    "TrainingError",
    "TrainingInterrupted",
    "StorageError",
    "HubError",
    "error_summary",
]


class BertfitError(Exception):
    """Base class of every error bertfit raises on purpose. ``exit_code`` is the CLI's exit status for it: 3 (bad
    data, options, model or output; 2 is a usage error that click reports, 1 an internal error)."""

    exit_code = 3


class DataError(BertfitError, ValueError):
    """A data file is missing, unreadable, or not usable as labelled text."""


class ConfigError(BertfitError, ValueError):
    """A training option or config file is invalid."""


class ModelError(BertfitError, OSError):
    """A model cannot be located, verified or loaded."""


class OutputExistsError(BertfitError, FileExistsError):
    """The output directory already holds files and overwriting was not asked for."""


class NotFittedError(BertfitError, ValueError, AttributeError):
    """The classifier was used before it was fitted or loaded."""


class MissingDependencyError(BertfitError, ImportError):
    """An optional extra (``bertfit[serve]``, ``bertfit[track]``, ...) is needed and not installed."""

    @classmethod
    def for_extra(cls, feature: str, extra: str, module: str) -> MissingDependencyError:
        """The error for ``feature`` needing ``module``, with the exact install line of ``extra``."""
        return cls(f"{feature} needs {module}, which is not installed; run: pip install 'bertfit[{extra}]'")


class TrainingError(BertfitError, RuntimeError):
    """Training diverged; ``saved_to`` names the directory holding the best state before it did, if any."""

    def __init__(self, message: str, saved_to: str | None = None):
        super().__init__(message)
        self.saved_to = saved_to


class TrainingInterrupted(TrainingError):
    """SIGINT or SIGTERM stopped training at ``step``; a checkpoint to ``--resume`` from was written when there was an
    output directory. ``exit_code`` is 128 + the signal number (130, 143), as a shell reports such an exit."""

    def __init__(self, message: str, saved_to: str | None = None, step: int = 0, exit_code: int = 130):
        super().__init__(message, saved_to)
        self.step = step
        self.exit_code = exit_code


class StorageError(BertfitError, OSError):
    """A model directory or checkpoint could not be written: no space left, or no permission."""


class HubError(BertfitError, OSError):
    """A model directory could not be uploaded to the Hugging Face Hub; the model stays saved locally and the message
    says how to retry (``bertfit push MODEL_DIR REPO_ID``)."""


def error_summary(err: BaseException) -> str:
    """The first line of a library's exception message (its type's name when the message is empty), for one-line
    errors that wrap it."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
