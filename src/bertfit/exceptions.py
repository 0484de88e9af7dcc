"""The errors bertfit raises on bad input, each with a message that names the problem and the fix.

BertfitError                      base class; the CLI prints "ErrorName: message" and exits with code 2
 ├── DataError (ValueError)       a data file that cannot be read or used as labelled text
 ├── ConfigError (ValueError)     an invalid training option or config file
 ├── ModelError (OSError)         a model directory or hub id that cannot be loaded
 ├── OutputExistsError            the output directory exists and holds files; pass overwrite=True
 │    (FileExistsError)
 └── NotFittedError               predict/save before fit or from_pretrained
      (ValueError, AttributeError)
"""

from __future__ import annotations

__all__ = ["BertfitError", "ConfigError", "DataError", "ModelError", "NotFittedError", "OutputExistsError"]


class BertfitError(Exception):
    """Base class of every error bertfit raises on purpose."""


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
