"""The ``bertfit`` command line: each command reads options, makes one library call and prints the result.

Exit codes: 0 success; 2 a usage error (an unknown option, a value of the wrong type: click's own message); 3 bad
data, options, model or output (a ``BertfitError``: one ``ErrorName: message`` line on stderr, no traceback); 1 an
internal error, i.e. a bug (one ``InternalError: Type: message`` line, its traceback written to the error log,
``$BERTFIT_LOG`` else ``~/.cache/bertfit/logs/``, and with ``--verbose`` to stderr); 130/143 a training stopped by
SIGINT/SIGTERM after its checkpoint; 141 stdout closed by its reader (``| head``).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import functools
import inspect
import json
import logging
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Annotated

import typer

from ._version import __version__
from .config import TrainConfig
from .exceptions import BertfitError

app = typer.Typer(
    name="bertfit",
    help="Fine-tune BERT-family encoders for text classification: train, evaluate and predict.",
    epilog="Exit codes: 0 success; 2 a usage error; 3 bad data, options, model or output (one 'ErrorName: message' "
    "line); 1 an internal error (a bug: one InternalError line, its traceback in $BERTFIT_LOG or "
    "~/.cache/bertfit/logs/); 130/143 a training stopped by SIGINT/SIGTERM after its checkpoint.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_HELP = {f.name: f.metadata.get("help", "") for f in fields(TrainConfig)}
_DEFAULT = {f.name: f.default for f in fields(TrainConfig)}
_BOOL_FIELDS = {f.name for f in fields(TrainConfig) if f.type in (bool, "bool")}
_FLAG = ""  # the metavar of a flag: --help shows no value type after it (typer's default shows <bool>)


def _option(name: str, *flags: str):
    """An option for TrainConfig field ``name``, with that field's help text (a flag, with no value shown in
    ``--help``, for a bool field)."""
    if name in _BOOL_FIELDS:
        return typer.Option(*flags, help=_HELP[name], metavar=_FLAG)
    return typer.Option(*flags, help=_HELP[name])


def _given(ctx: typer.Context) -> set[str]:
    """Names of the parameters set on the command line (not left at their defaults)."""
    # Compared by name: typer may bring its own copy of click's ParameterSource enum.
    return {name for name in ctx.params if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"}


def _errors(command):
    """Turn a BertfitError into 'ErrorName: message' on stderr and its exit code (3; an interrupted training: 130 for
    SIGINT, 143 for SIGTERM), and any other exception into one 'InternalError: ...' line and exit code 1, with the
    traceback in the error log."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _setup_logging()
        try:
            return command(*args, **kwargs)
        except BertfitError as err:
            typer.echo(f"{type(err).__name__}: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except BrokenPipeError:  # the reader of stdout left (`| head`): stop quietly, with SIGPIPE's exit code
            _drop_stdout()
            raise typer.Exit(141) from None
        except Exception as err:
            _report_internal_error(err)
            raise typer.Exit(1) from None

    return wrapper


def _report_internal_error(err: Exception) -> None:
    trace = traceback.format_exc()
    path = _write_error_log(trace)
    if _global["verbose"] or path is None:
        typer.echo(trace.rstrip(), err=True)
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    where = f"the traceback is in {path}" if path else "the traceback is above"
    typer.echo(f"InternalError: {type(err).__name__}{': ' if message else ''}{message} ({where})", err=True)


def _error_log_path() -> Path:
    """Where the CLI writes an internal error's traceback: ``$BERTFIT_LOG`` (appended to), else
    ``~/.cache/bertfit/logs/bertfit-<UTC time>-<pid>.log``."""
    if os.environ.get("BERTFIT_LOG"):
        return Path(os.environ["BERTFIT_LOG"]).expanduser()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Path.home() / ".cache" / "bertfit" / "logs" / f"bertfit-{stamp}-{os.getpid()}.log"


def _write_error_log(trace: str) -> Path | None:
    # The command, versions, this run's recent bertfit log lines and the traceback; None when it cannot be written.
    path = _error_log_path()
    lines = list(_recent_lines().lines)
    header = f"bertfit {__version__}, Python {platform.python_version()}, {platform.platform()}"
    text = f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}  {header}\n$ {shlex.join(sys.argv)}\n"
    text += "".join(f"{line}\n" for line in lines) + trace + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError:
        return None
    return path


def _drop_stdout() -> None:
    # Point stdout at /dev/null, so that the interpreter's final flush does not fail on the closed pipe again.
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no real descriptor (a test runner's capture)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _RecentLines(logging.Handler):
    """The last log lines of this command, for the error log."""

    def __init__(self, capacity: int = 500) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _recent_lines() -> _RecentLines:
    logger = logging.getLogger("bertfit")
    recent = next((h for h in logger.handlers if isinstance(h, _RecentLines)), None)
    if recent is None:
        recent = _RecentLines()
        logger.addHandler(recent)
    return recent


class _TqdmHandler(logging.Handler):
    """Log lines that do not break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        prefix = "" if record.levelno < logging.WARNING else f"{record.levelname}: "
        tqdm.write(prefix + record.getMessage(), file=sys.stderr)


def _setup_logging() -> None:
    logger = logging.getLogger("bertfit")
    if not any(isinstance(h, _TqdmHandler) for h in logger.handlers):
        logger.addHandler(_TqdmHandler())
    _recent_lines().lines.clear()  # this command's lines only
    level = logging.getLevelName(_global["log_level"].upper())
    # Under torchrun / accelerate launch only rank 0 reports progress; the others log warnings only.
    logger.setLevel(level if os.environ.get("RANK", "0") == "0" else max(level, logging.WARNING))
    logger.propagate = False


class LogLevel(str, enum.Enum):
    """The levels of ``--log-level``."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


# The global options of this invocation (set by the callback, which runs before every command).
_global: dict = {"verbose": False, "log_level": "info"}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bertfit {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", metavar=_FLAG, callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            metavar=_FLAG,
            help="Print the traceback of an internal error on stderr too (it always goes to the log).",
        ),
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", help="The least severe bertfit log lines shown on stderr.")
    ] = LogLevel.info,
) -> None:
    """Fine-tune BERT-family encoders for text classification: train, evaluate and predict.

    Exit codes: 0 success; 2 a usage error; 3 bad data, options, model or output (one ErrorName: message line); 1 an
    internal error (a bug: one InternalError line, its traceback written to $BERTFIT_LOG, else
    ~/.cache/bertfit/logs/bertfit-<time>-<pid>.log); 130/143 a training stopped by SIGINT/SIGTERM.
    """
    _global.update(verbose=verbose, log_level=log_level.value)
    from .hardware import keep_freed_memory

    keep_freed_memory()  # fewer page faults in every forward pass (see its docstring)


DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Labelled data: CSV, TSV, JSONL, JSON, Parquet (.gz too), "
        ".txt with --sep, or a datasets save_to_disk folder.",
    ),
]
SepOpt = Annotated[
    str | None, typer.Option("--sep", help="Field separator (required for .txt text<sep>label lines, e.g. ';').")
]
EncodingOpt = Annotated[str, typer.Option("--encoding", help="Text encoding of the data file.")]
ValidationOpt = Annotated[
    Path | None,
    typer.Option(
        "--validation", help="Validation file (same format); default: a stratified --val-size share of --data."
    ),
]
TextColOpt = Annotated[str, _option("text_column", "--text-column")]
LabelColOpt = Annotated[str, _option("label_column", "--label-column")]
LabelSepOpt = Annotated[
    str | None,
    typer.Option(
        "--label-sep",
        help="Separator between the labels of one cell of multi-label data, e.g. ';' for 'joy;love' (a label "
        "column of lists needs none).",
    ),
]


def _set_quiet(value: bool) -> bool:
    from .progress import set_quiet

    set_quiet(value)
    return value


AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        metavar=_FLAG,
        help="Load a model whose weights are only a pickle-based pytorch_model.bin (it can run code when read: "
        "only for a source you trust); by default only safetensors weights load.",
    ),
]
PredictPrecisionOpt = Annotated[
    str,
    typer.Option(
        "--precision",
        help="auto: bf16 autocast where the CPU/GPU supports it, else fp32 (about 2x the texts per second; the "
        "training run records how often it agrees with fp32 in bertfit.json's precision_check); fp32: exact "
        "probabilities; bf16 or fp16 autocast. An ONNX export ignores it.",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        metavar=_FLAG,
        callback=_set_quiet,
        help="No progress bars (they are off anyway when stderr is not a terminal).",
    ),
]


@app.command()
@_errors
def train(
    ctx: typer.Context,
    data: DataOpt,
    validation: ValidationOpt = None,
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    label_sep: Annotated[str | None, _option("label_sep", "--label-sep")] = None,
    model: Annotated[str | None, _option("model_name_or_path", "--model")] = None,
    output_dir: Annotated[str, _option("output_dir", "--output-dir")] = "bertfit-model",
    epochs: Annotated[float | None, _option("epochs", "--epochs")] = None,
    batch_size: Annotated[int, _option("batch_size", "--batch-size")] = _DEFAULT["batch_size"],
    max_tokens_per_batch: Annotated[int | None, _option("max_tokens_per_batch", "--max-tokens-per-batch")] = None,
    learning_rate: Annotated[float, _option("learning_rate", "--lr", "--learning-rate")] = _DEFAULT["learning_rate"],
    max_length: Annotated[int | None, _option("max_length", "--max-length")] = None,
    long_text: Annotated[str, _option("long_text", "--long-text")] = _DEFAULT["long_text"],
    stride: Annotated[int | None, _option("stride", "--stride")] = None,
    aggregate: Annotated[str, _option("aggregate", "--aggregate")] = _DEFAULT["aggregate"],
    max_windows: Annotated[int, _option("max_windows", "--max-windows")] = _DEFAULT["max_windows"],
    window_sampling: Annotated[str, _option("window_sampling", "--window-sampling")] = _DEFAULT["window_sampling"],
    seed: Annotated[int, _option("seed", "--seed")] = _DEFAULT["seed"],
    val_size: Annotated[float, _option("val_size", "--val-size")] = _DEFAULT["val_size"],
    metric_for_best_model: Annotated[str, _option("metric_for_best_model", "--metric")] = _DEFAULT[
        "metric_for_best_model"
    ],
    evals_per_epoch: Annotated[int, _option("evals_per_epoch", "--evals-per-epoch")] = _DEFAULT["evals_per_epoch"],
    early_stopping_patience: Annotated[
        int | None, _option("early_stopping_patience", "--early-stopping-patience")
    ] = None,
    positive_label: Annotated[str | None, _option("positive_label", "--positive-label")] = None,
    precision: Annotated[str, _option("precision", "--precision")] = _DEFAULT["precision"],
    class_weights: Annotated[str, _option("class_weights", "--class-weights")] = _DEFAULT["class_weights"],
    threshold_metric: Annotated[str, _option("threshold_metric", "--threshold-metric")] = _DEFAULT["threshold_metric"],
    calibrate: Annotated[bool, _option("calibrate", "--calibrate/--no-calibrate")] = _DEFAULT["calibrate"],
    lexical: Annotated[str, _option("lexical", "--lexical")] = _DEFAULT["lexical"],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="JSON/YAML/TOML file with the same keys as these flags (learning_rate for --lr); flags win.",
        ),
    ] = None,
    overwrite: Annotated[bool, _option("overwrite", "--overwrite")] = False,
    resume: Annotated[bool, _option("resume", "--resume")] = False,
    allow_pickle: Annotated[bool, _option("allow_pickle", "--allow-pickle")] = False,
    cache_dir: Annotated[str | None, _option("cache_dir", "--cache-dir")] = None,
    freeze_embeddings: Annotated[
        bool, _option("freeze_embeddings", "--freeze-embeddings/--train-embeddings")
    ] = _DEFAULT["freeze_embeddings"],
    lazy_embeddings: Annotated[bool, _option("lazy_embeddings", "--lazy-embeddings/--no-lazy-embeddings")] = _DEFAULT[
        "lazy_embeddings"
    ],
    torch_compile: Annotated[bool, _option("torch_compile", "--torch-compile")] = False,
    native: Annotated[bool, _option("native", "--native/--no-native")] = _DEFAULT["native"],
    baselines: Annotated[bool, _option("baselines", "--baselines/--no-baselines")] = _DEFAULT["baselines"],
    track: Annotated[str | None, _option("track", "--track")] = None,
    tracking_uri: Annotated[str | None, _option("tracking_uri", "--tracking-uri")] = None,
    push_to_hub: Annotated[str | None, _option("push_to_hub", "--push-to-hub")] = None,
    hub_private: Annotated[bool, _option("hub_private", "--hub-private")] = False,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune a model on labelled texts, evaluate it on validation and save it to --output-dir."""
    from .train import is_main_process, summary
    from .train import train as run_training

    cfg, train_data, val_data, _ = _training_inputs(ctx, data, validation, config, output_dir, sep, encoding)
    clf = run_training(cfg, train_data, val_data)
    if not is_main_process():  # the other processes of torchrun / accelerate launch: rank 0 reports
        return
    typer.echo(summary(clf, cfg.output_dir))
    _print_warnings(clf)


def _training_inputs(ctx: typer.Context, data: Path, validation, config, output_dir, sep, encoding):
    """The TrainConfig of a train or tune command (the --config file's options, and the flags given over them), its
    training and validation data, and the names of the options the file or the flags set."""
    from .config import read_config_file
    from .data import load_data

    flags = {("model_name_or_path" if k == "model" else k): v for k, v in ctx.params.items() if k in _given(ctx)}
    flags = {k: v for k, v in flags.items() if k in _DEFAULT}
    from_file = read_config_file(config) if config else {}
    cfg = TrainConfig.from_dict({"output_dir": output_dir, **from_file, **flags})
    read = {"sep": sep, "encoding": encoding, "label_sep": cfg.label_sep}
    train_data = load_data(data, cfg.text_column, cfg.label_column, **read)
    val_data = validation and load_data(validation, cfg.text_column, cfg.label_column, **read)
    return cfg, train_data, val_data, {k.replace("-", "_") for k in from_file} | set(flags)


def _print_warnings(clf) -> None:
    for warning in clf.card.training.warnings:
        typer.echo(f"\n{'!' * 100}\n{warning}\n{'!' * 100}", err=True)


def _with_train_options(command):
    """``command`` with every option of ``train`` after its own (typer reads the joined signature): ``bertfit tune``
    trains its trials with the flags of ``bertfit train``."""
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in own}
    shared = [p for p in inspect.signature(train, eval_str=True).parameters.values() if p.name not in names]
    command.__signature__ = inspect.Signature(own + shared)
    command.__annotations__ = {p.name: p.annotation for p in own + shared}
    return command


@app.command()
@_errors
@_with_train_options
def tune(
    ctx: typer.Context,
    data: DataOpt,
    trials: Annotated[int, typer.Option("--trials", min=1, help="Most trials to run.")] = 20,
    time_budget: Annotated[
        str | None,
        typer.Option(
            "--time-budget",
            help="Start no trial after this long, e.g. 90s, 20m, 1h or 1h30m; a running trial stops at its next "
            "evaluation (once a trial has completed). Default: no limit.",
        ),
    ] = None,
    **options,
) -> None:
    """Search learning rate, epochs, batch size, warm-up ratio and class weights on validation (Optuna's TPE sampler,
    pruning from the first evaluation) and save the best trial's model to --output-dir.

    Takes every option of train: those given (or set in --config) stay fixed, the others of the five are searched.
    """
    from .tune import SearchSpace, parse_duration, tune_summary
    from .tune import tune as run_search

    budget = None if time_budget is None else parse_duration(time_budget)  # before the data: fail at once
    inputs = [options[name] for name in ("validation", "config", "output_dir", "sep", "encoding")]
    cfg, train_data, val_data, given = _training_inputs(ctx, data, *inputs)
    space = SearchSpace().without(given)
    clf = run_search(cfg, train_data, val_data, trials=trials, time_budget=budget, space=space)
    typer.echo(tune_summary(clf, cfg.output_dir))
    _print_warnings(clf)


@app.command()
@_errors
def evaluate(
    model_dir: Annotated[
        Path, typer.Argument(help="A model directory written by 'bertfit train', or an export of 'bertfit export'.")
    ],
    data: DataOpt,
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    positive_label: Annotated[
        str | None,
        typer.Option(
            "--positive-label", help="Positive class of a binary task; default: the one saved with the model."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=_FLAG, help="Print the metrics as one JSON object only.")
    ] = False,
    label_sep: LabelSepOpt = None,
    allow_pickle: AllowPickleOpt = False,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a trained model on a labelled file."""
    from .data import load_data
    from .evaluate import evaluate as run_evaluation
    from .metrics import format_metrics
    from .model import load_classifier

    clf = load_classifier(model_dir, allow_pickle=allow_pickle)
    dataset = load_data(data, text_column, label_column, sep=sep, encoding=encoding, label_sep=label_sep)
    metrics = run_evaluation(clf, dataset, positive_label)
    typer.echo(json.dumps(metrics, indent=2) if as_json else format_metrics(metrics))


PredictInputOpt = Annotated[
    Path | None,
    typer.Option(
        "--input",
        help="File of texts to classify (any format --data takes; only the text column is needed); - reads stdin: "
        "one text per line, or JSONL when its first line is a JSON object.",
    ),
]
PredictOutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        help="Where the predictions go: .csv or .jsonl with text, label, score and prob_<label> columns "
        "(multi-label models: text, labels and prob_<label>); - or none with --input: CSV on stdout.",
    ),
]
PredictJsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        metavar=_FLAG,
        help="Print one JSON object per text (the rows of a .jsonl output) instead of lines or CSV.",
    ),
]
PredictLabelSepOpt = Annotated[
    str | None,
    typer.Option(
        "--label-sep",
        help="Joins a multi-label model's predicted labels in CSV output and printed lines; default: the separator "
        "it was trained with, else ';'.",
    ),
]


@app.command()
@_errors
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="A model directory written by 'bertfit train', or an export of 'bertfit export'.")
    ],
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to classify; a single - reads them from stdin.")
    ] = None,
    input_file: PredictInputOpt = None,
    output_file: PredictOutputOpt = None,
    as_json: PredictJsonOpt = False,
    text_column: Annotated[
        str, typer.Option("--text-column", help="Column of --input (field of JSONL stdin) holding the texts.")
    ] = "text",
    keep_columns: Annotated[
        str | None,
        typer.Option(
            "--keep-columns",
            help="Comma-separated columns of --input to write beside each prediction, first (e.g. id).",
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar=_FLAG, help="Replace an existing --output file.")
    ] = False,
    num_workers: Annotated[
        int,
        typer.Option(
            "--num-workers", min=1, help="Processes predicting --input in parallel, each with its own model copy."
        ),
    ] = 1,
    precision: PredictPrecisionOpt = "auto",
    allow_pickle: AllowPickleOpt = False,
    label_sep: PredictLabelSepOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Predict labels of texts given as arguments (- : from stdin), or of a whole file (--input, --output).

    Printed lines are label, probability and text, tab-separated; for a multi-label model the predicted labels and
    their probabilities, each joined by --label-sep (both empty when no label reaches its threshold). --input
    without --output (or with --output -) writes CSV to stdout, JSONL with --json. Rows keep the input order.
    """
    from .exceptions import ConfigError
    from .model import load_classifier
    from .predict import STDIO, predict_file, prediction_lines, stdin_chunks

    from_stdin = texts == [STDIO]
    if (input_file and texts) or not (input_file or texts):
        raise ConfigError("give texts as arguments (- reads them from stdin), or --input FILE (- for stdin)")
    if output_file and not (input_file or from_stdin):
        raise ConfigError("--output takes the predictions of --input FILE (or of - : texts from stdin)")
    keep = [column.strip() for column in (keep_columns or "").split(",") if column.strip()]
    if keep and not input_file:
        raise ConfigError("--keep-columns names columns of --input FILE; texts given as arguments have none")
    clf = load_classifier(model_dir, precision=precision, allow_pickle=allow_pickle)
    if input_file or output_file:  # a table, CSV or JSONL, to a file or stdout
        read = {"text_column": text_column, "sep": sep, "encoding": encoding, "num_workers": num_workers}
        write = {"output_format": "jsonl" if as_json else "csv", "overwrite": overwrite, "label_sep": label_sep}
        count = predict_file(clf, input_file or STDIO, output_file, keep_columns=keep, **read, **write)
        if output_file is not None and str(output_file) != STDIO:
            typer.echo(f"wrote {count} predictions to {output_file}")
        return
    chunks = stdin_chunks(text_column, encoding=encoding) if from_stdin else [list(texts)]
    for line in prediction_lines(clf, chunks, as_json=as_json, label_sep=label_sep, num_workers=num_workers):
        typer.echo(line)


@app.command()
@_errors
def serve(
    model_dir: Annotated[
        Path, typer.Argument(help="A model directory written by 'bertfit train', or an export of 'bertfit export'.")
    ],
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: all).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, help="Most texts per forward pass; 1 turns micro-batching off.")
    ] = 64,
    max_wait_ms: Annotated[
        float, typer.Option("--max-wait-ms", min=0, help="How long a request waits for others to share its batch.")
    ] = 5.0,
    max_texts: Annotated[int, typer.Option("--max-texts", min=1, help="Most texts per request.")] = 256,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, help="Most characters per text.")] = 10_000,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=1, help="Most texts waiting for a forward pass; more: 503 + Retry-After.")
    ] = 1024,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds a request may take, queue included; more: 504.")
    ] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="BERTFIT_API_KEY",
            show_default=False,
            help="Require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on /predict and /info (401 otherwise). "
            "Prefer the environment variable: other users can read command lines.",
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="A Host name clients may use besides localhost (repeatable); checked on a loopback bind or when "
            "given.",
        ),
    ] = None,
    precision: PredictPrecisionOpt = "auto",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, /ready and /info, a try-it page at /, API docs at /docs."""
    from .model import load_classifier
    from .serve import check_address, run_server

    check_address(host, port)  # a port in use: said before the model loads
    clf = load_classifier(model_dir)
    typer.echo(f"Serving {model_dir} (labels {clf.labels}) at http://{host}:{port}/ ; API docs at /docs", err=True)
    run_server(
        clf,
        host=host,
        port=port,
        allowed_hosts=allowed_host or (),
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_texts=max_texts,
        max_chars=max_chars,
        max_queue=max_queue,
        timeout=timeout,
        api_key=api_key,
        precision=precision,
    )


ModelOpt = Annotated[
    str,
    typer.Option("--model", help="Model directory or hub id whose tokenizer is used; default: the embedded model."),
]


@app.command()
@_errors
def explore(
    data: Annotated[Path, typer.Argument(help="Labelled data file (any format --data takes).")],
    validation: Annotated[
        Path | None, typer.Option("--validation", help="Validation file to compare with and check for leakage.")
    ] = None,
    model: ModelOpt = "sentence-transformers/all-MiniLM-L6-v2",
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the PNG plots go.")] = Path(
        "bertfit-explore"
    ),
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    label_sep: LabelSepOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=_FLAG, help="Print the numbers as one JSON object only.")
    ] = False,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Label balance, lengths (characters, words, tokens), truncation, duplicates, leakage; plots in --output-dir."""
    from .explore import explore as run_explore
    from .explore import format_summary

    result = run_explore(
        data,
        validation,
        model,
        output_dir,
        text_column=text_column,
        label_column=label_column,
        label_sep=label_sep,
        sep=sep,
        encoding=encoding,
    )
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else format_summary(result))


@app.command()
@_errors
def tokenize(
    text: Annotated[str, typer.Argument(help="The text to tokenize.")],
    model: ModelOpt = "sentence-transformers/all-MiniLM-L6-v2",
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", help="Count against this; default: a trained model's, else the model limit."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=_FLAG, help="Print the table as one JSON object only.")
    ] = False,
) -> None:
    """Show how the tokenizer cuts a text: each token, its id and attention mask, special tokens marked."""
    from .explore import format_tokens, tokenize_text

    result = tokenize_text(model, text, max_length)
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False) if as_json else format_tokens(result))


@app.command()
@_errors
def explain(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by 'bertfit train' (not an export).")],
    text: Annotated[str, typer.Argument(help="The text to explain.")],
    label: Annotated[
        str | None,
        typer.Option("--label", help="The label to explain; default: the predicted one (multi-label: most probable)."),
    ] = None,
    steps: Annotated[
        int, typer.Option("--steps", min=1, help="Integration points of integrated gradients; more: exacter, slower.")
    ] = 32,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=_FLAG, help="Print the explanation as one JSON object only.")
    ] = False,
    html_file: Annotated[
        Path | None, typer.Option("--html", help="Also write the highlighted text as a self-contained HTML page.")
    ] = None,
) -> None:
    """Which words drive a label: per-word attributions by integrated gradients (needs the 'explain' extra)."""
    from .explain import explain as explain_text
    from .explain import explanation_html, format_explanation
    from .files import atomic_file
    from .model import load_classifier

    explanation = explain_text(load_classifier(model_dir), text, label, steps=steps)
    if html_file is not None:
        with atomic_file(html_file) as handle:
            handle.write(explanation_html(explanation))
    if as_json:
        typer.echo(json.dumps(explanation.to_dict(), indent=2, ensure_ascii=False))
        return
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ  # ANSI highlighting on a terminal only
    typer.echo(format_explanation(explanation, color=color))
    if html_file is not None:
        typer.echo(f"wrote {html_file}")


@app.command()
@_errors
def report(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by 'bertfit train'.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Labelled file to evaluate on; default: the saved validation predictions."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Where the HTML goes; default: MODEL_DIR/report.html.")
    ] = None,
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    label_sep: LabelSepOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Rebuild a model's report.html, optionally on another labelled file."""
    from .evaluate import write_report

    columns = {"text_column": text_column, "label_column": label_column, "label_sep": label_sep}
    path = write_report(model_dir, data, output, sep=sep, encoding=encoding, **columns)
    typer.echo(f"wrote {path}")


@app.command()
@_errors
def baseline(
    data: DataOpt,
    validation: ValidationOpt = None,
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Encoder of the frozen-embedding baseline; default: the embedded model."),
    ] = None,
    val_size: Annotated[float, _option("val_size", "--val-size")] = _DEFAULT["val_size"],
    seed: Annotated[int, _option("seed", "--seed")] = _DEFAULT["seed"],
    positive_label: Annotated[str | None, _option("positive_label", "--positive-label")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=_FLAG, help="Print the results as one JSON object only.")
    ] = False,
    label_sep: LabelSepOpt = None,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Majority class, TF-IDF + logistic regression and frozen embeddings + logistic regression, scored like train."""
    from .baseline import format_baselines, run_baselines
    from .data import load_data, train_val_split

    read = {"sep": sep, "encoding": encoding, "label_sep": label_sep}
    train_data = load_data(data, text_column, label_column, **read)
    if validation:
        val_data = load_data(validation, text_column, label_column, **read)
    else:
        train_data, val_data = train_val_split(train_data, val_size, seed)
    results = run_baselines(train_data, val_data, model_name_or_path=model, positive_label=positive_label)
    if as_json:
        typer.echo(json.dumps(results, indent=2, ensure_ascii=False))
        return
    typer.echo(f"Baselines, trained on {len(train_data)} texts, scored on {len(val_data)} validation texts:")
    typer.echo(format_baselines(results, train_data.multi_label))


@app.command()
@_errors
def audit(
    data: DataOpt,
    output_dir: Annotated[
        Path, typer.Option("--output", "--output-dir", help="Where label_issues.csv and audit.html go.")
    ] = Path("bertfit-audit"),
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds of the probabilities.")] = 5,
    features: Annotated[
        str,
        typer.Option(
            "--features", help="embeddings: frozen encoder + logistic regression; tfidf: TF-IDF + logistic regression."
        ),
    ] = "embeddings",
    fine_tune: Annotated[
        bool,
        typer.Option("--fine-tune", metavar=_FLAG, help="Fine-tune a model per fold instead (slow: one per fold)."),
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", help="Encoder (directory or hub id); default: the embedded model.")
    ] = None,
    near_duplicates: Annotated[
        bool,
        typer.Option(
            "--near-duplicates/--no-near-duplicates", help="Look for differently-labelled near-duplicate texts."
        ),
    ] = True,
    similarity: Annotated[
        float, typer.Option("--similarity", help="Cosine similarity from which two texts are near-duplicates.")
    ] = 0.95,
    text_column: TextColOpt = _DEFAULT["text_column"],
    label_column: LabelColOpt = _DEFAULT["label_column"],
    label_sep: LabelSepOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fold assignment.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar=_FLAG, help="Replace an existing --output directory.")
    ] = False,
    sep: SepOpt = None,
    encoding: EncodingOpt = "utf-8",
    quiet: QuietOpt = False,
) -> None:
    """Find likely mislabeled rows (cleanlab on out-of-fold probabilities) and conflicting duplicates."""
    from .audit import audit as run_audit
    from .audit import format_audit

    read = {"text_column": text_column, "label_column": label_column, "label_sep": label_sep, "sep": sep}
    options = {"folds": folds, "features": features, "fine_tune": fine_tune, "model_name_or_path": model}
    near = {"near_duplicates": near_duplicates, "similarity": similarity}
    result = run_audit(data, output_dir, overwrite=overwrite, encoding=encoding, seed=seed, **read, **options, **near)
    typer.echo(format_audit(result))


@app.command()
@_errors
def export(
    model_dir: Annotated[Path, typer.Argument(help="A model directory written by 'bertfit train'.")],
    onnx: Annotated[
        bool, typer.Option("--onnx", metavar=_FLAG, help="Export to ONNX (required: the only format for now).")
    ] = False,
    quantize: Annotated[
        str | None,
        typer.Option("--quantize", help="int8: dynamic quantization (int8 weights; smaller, usually faster on CPU)."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Where the export goes; default: MODEL_DIR-onnx (MODEL_DIR-onnx-int8)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", metavar=_FLAG, help="Replace an existing --output-dir.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Export a model to ONNX (optionally int8) and re-evaluate it on the saved validation texts."""
    from .exceptions import ConfigError
    from .export import export_onnx

    if not onnx:
        raise ConfigError("choose an export format: pass --onnx (the only one for now)")
    result = export_onnx(model_dir, output_dir, quantize=quantize, overwrite=overwrite)
    typer.echo(f"wrote {result['output_dir']} (model.onnx: {result['onnx_bytes'] / 2**20:.1f} MiB)")
    if result["texts"]:
        before, after = result["accuracy_pytorch"], result["accuracy_onnx"]
        typer.echo(f"Re-evaluated on {result['texts']} validation texts:")
        typer.echo(f"  accuracy         {before:.4f} (PyTorch) -> {after:.4f} (ONNX), change {after - before:+.4f}")
        typer.echo(f"  label agreement  {result['label_agreement']:.4f}")
        typer.echo(
            f"  PyTorch {result['pytorch_auto_precision']} (the default of predict and serve) agrees with PyTorch "
            f"fp32 on {result['pytorch_auto_label_agreement']:.4f} of the labels"
        )
        typer.echo(f"  max |prob diff|  {result['max_abs_prob_diff']:.2g}")


@app.command()
@_errors
def push(
    model_dir: Annotated[
        Path, typer.Argument(help="A model directory written by 'bertfit train', or an export of 'bertfit export'.")
    ],
    repo_id: Annotated[
        str, typer.Argument(help="The Hub repository, e.g. your-name/spam-classifier; created when it is missing.")
    ],
    private: Annotated[
        bool,
        typer.Option(
            "--private", metavar=_FLAG, help="Create the repository private (an existing one keeps its visibility)."
        ),
    ] = False,
) -> None:
    """Upload a model directory, with its model card README.md, to the Hugging Face Hub (token: HF_TOKEN or
    `hf auth login`)."""
    from .hub import push_to_hub

    url = push_to_hub(model_dir, repo_id, private=private)
    typer.echo(f"pushed {model_dir} to {url}")


cache_app = typer.Typer(
    help="The cache of tokenized texts and frozen embeddings: its size, and emptying it.", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")
CacheDirOpt = Annotated[
    str | None, typer.Option("--cache-dir", help="The cache's folder; default $BERTFIT_CACHE or ~/.cache/bertfit.")
]


@cache_app.command("info")
@_errors
def cache_info(cache_dir: CacheDirOpt = None) -> None:
    """Where the cache (tokenized texts, frozen embeddings) is, how many entries it holds, their size and the limit."""
    from .cache import cache_directory, cache_entries, cache_limit

    directory = cache_directory(cache_dir)
    entries = cache_entries(directory)
    size = sum(entry.stat().st_size for entry in entries)
    where = directory if directory is not None else "(off)"
    typer.echo(f"{where}: {len(entries)} entries, {size / 2**20:.1f} MiB of at most {cache_limit() / 2**20:.0f} MiB")


@cache_app.command("clear")
@_errors
def cache_clear(cache_dir: CacheDirOpt = None) -> None:
    """Delete every entry of the cache (runs tokenize and embed again, once)."""
    from .cache import cache_directory, clear_cache

    directory = cache_directory(cache_dir)
    count, size = clear_cache(directory)
    typer.echo(f"removed {count} entries ({size / 2**20:.1f} MiB) from {directory}")


def main() -> None:
    """Entry point of the ``bertfit`` console script."""
    app()


if __name__ == "__main__":
    main()
