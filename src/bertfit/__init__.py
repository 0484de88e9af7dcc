"""bertfit: fine-tune BERT-family encoders for text classification on your own labelled data.

>>> from bertfit import TextClassifier, TrainConfig, load_data, train, evaluate

The public names are imported on first use (as scikit-learn and SciPy do), so ``import bertfit`` and
``bertfit --help`` load neither torch nor transformers.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__
from .exceptions import (
    BertfitError,
    ConfigError,
    DataError,
    MissingDependencyError,
    ModelError,
    NotFittedError,
    OutputExistsError,
    TrainingError,
)

if TYPE_CHECKING:
    from .config import TrainConfig
    from .data import TextDataset, load_data
    from .estimator import BertfitClassifier
    from .evaluate import evaluate
    from .model import TextClassifier
    from .predict import predict_file
    from .train import train

__all__ = [
    "BertfitClassifier",
    "BertfitError",
    "ConfigError",
    "DataError",
    "MissingDependencyError",
    "ModelError",
    "NotFittedError",
    "OutputExistsError",
    "TextClassifier",
    "TextDataset",
    "TrainConfig",
    "TrainingError",
    "__version__",
    "evaluate",
    "load_data",
    "predict_file",
    "train",
]

_LAZY = {
    "BertfitClassifier": "estimator",
    "TrainConfig": "config",
    "TextDataset": "data",
    "load_data": "data",
    "evaluate": "evaluate",
    "TextClassifier": "model",
    "predict_file": "predict",
    "train": "train",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The package module: importing its submodules ``train`` and ``evaluate`` (which the import system binds on the
    package) never hides the functions of the same name (``bertfit.train`` is the function, as it was when the
    package imported it eagerly)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
