"""bertfit: fine-tune BERT-family encoders for text classification on your own labelled data.

>>> from bertfit import TextClassifier, TrainConfig, load_data, train, evaluate
"""

from ._version import __version__
from .config import TrainConfig
from .data import TextDataset, load_data
from .evaluate import evaluate
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
from .model import TextClassifier
from .predict import predict_file
from .train import train

__all__ = [
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
