"""Experiment tracking: a run's parameters and metrics sent to MLflow, TensorBoard or Weights & Biases as training
goes, and what bertfit adds after saving.

The output directory always gets the run's options and every log line (``bertfit.json``: ``config``, ``history``,
``log_history``). With ``track`` set, :class:`Tracker` also logs the training parameters (under the names the Hugging
Face Trainer's integrations use, e.g. ``per_device_train_batch_size``), the training loss, learning rate and
gradient norm at every logging point, and every evaluation's ``eval_*`` metrics, by optimizer step. After saving it
adds the bertfit options (``bertfit.*``), the final validation metrics (``final_*``) and, for MLflow, the model
directory as the artifact ``model``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .exceptions import ConfigError, MissingDependencyError, error_summary

__all__ = ["Tracker", "DEFAULT_TRACKING_URIS"]

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URIS = {"mlflow": "./mlruns", "tensorboard": "./tensorboard"}
_MODULES = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


class Tracker:
    """One training run's link to the tracker named by ``config.track`` (a no-op when it is None).

    Args:
        config: The run's options (``track``, ``tracking_uri``, ``output_dir``).
        main_process: Whether this is the process that logs (rank 0 of a distributed run).

    Raises:
        MissingDependencyError: The tracker's package is not installed.
    """

    def __init__(self, config: TrainConfig, main_process: bool = True) -> None:
        self.config = config
        self.kind = config.track if main_process else None
        self.uri = config.tracking_uri or DEFAULT_TRACKING_URIS.get(config.track or "")
        if config.track and not any(importlib.util.find_spec(m) for m in _MODULES[config.track]):
            raise MissingDependencyError.for_extra(f"--track {config.track}", "track", _MODULES[config.track][0])
        self._run: Any = None  # the mlflow module, a SummaryWriter or a wandb run, while open

    @property
    def run_name(self) -> str | None:
        return Path(self.config.output_dir).name if self.config.output_dir else None

    def start(self) -> None:
        """Open the run.

        Raises:
            ConfigError: The tracker could not open a run (a server that does not answer, no wandb login, a log
                directory that cannot be written): before any training step.
        """
        try:
            if self.kind == "mlflow":
                self._run = _start_mlflow(self.uri, self.run_name)
            elif self.kind == "tensorboard":
                self._run = _summary_writer(os.path.join(self.uri, self.run_name or "run"))
            elif self.kind == "wandb":
                import wandb

                self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "bertfit"), name=self.run_name)
        except Exception as err:  # whatever the tracker's library raises: its own exception classes differ
            logger.debug("--track %s could not open a run", self.kind, exc_info=True)
            first = error_summary(err).rstrip(".")
            raise ConfigError(
                f"--track {self.kind} could not open a run at {self.uri or 'its default place'}: {first}; "
                f"{_START_FIXES[self.kind]}"
            ) from None

    def log_params(self, params: dict[str, Any]) -> None:
        """Log the training parameters."""
        if self.kind == "mlflow" and self._run is not None:
            self._run.log_params(params)
        elif self.kind == "tensorboard" and self._run is not None:
            self._run.add_text("parameters", "\n".join(f"{k}: {v}" for k, v in params.items()))
        elif self.kind == "wandb" and self._run is not None:
            self._run.config.update(params)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log scalar metrics at optimizer step ``step``."""
        if self._run is None:
            return
        if self.kind == "mlflow":
            self._run.log_metrics(metrics, step=step)
        elif self.kind == "tensorboard":
            for name, value in metrics.items():
                self._run.add_scalar(name, value, step)
        else:
            self._run.log(metrics, step=step)

    def finish(self, metrics: dict[str, Any] | None, model_dir: str | Path | None) -> None:
        """Add bertfit's options, the final metrics and (MLflow) the saved model directory, then close the run."""
        if self._run is None:
            return
        run, self._run = self._run, None
        options = {f"bertfit.{k}": v for k, v in self.config.to_dict().items() if v is not None}
        final = {f"final_{k}": float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
        if self.kind == "mlflow":
            run.log_params(options)
            run.log_metrics(final)
            if model_dir:
                run.log_artifacts(str(model_dir), artifact_path="model")
            run.end_run()
        elif self.kind == "tensorboard":
            for name, value in final.items():
                run.add_scalar(name, value)
            run.close()
        else:
            run.config.update(options)
            run.summary.update(final)
            run.finish()

    @contextlib.contextmanager
    def closing_on_error(self) -> Iterator[None]:
        """Close an open run (MLflow: as FAILED) when the block raises."""
        try:
            yield
        except BaseException:
            run, self._run = self._run, None
            if self.kind == "mlflow" and run is not None:
                run.end_run(status="FAILED")
            elif self.kind == "tensorboard" and run is not None:
                run.close()
            elif run is not None:
                run.finish(exit_code=1)
            raise


_START_FIXES = {
    "mlflow": "check --tracking-uri (is the server up?), or leave it unset to log to a local ./mlruns",
    "tensorboard": "pass a writable --tracking-uri directory",
    "wandb": "log in with 'wandb login' or set WANDB_API_KEY, or set WANDB_MODE=offline to log locally",
}


def _start_mlflow(uri: str, run_name: str | None):
    import mlflow

    if "://" not in uri or uri.startswith("file:"):
        # MLflow 3 keeps the file store (the offline default here) behind this opt-in; a user's own setting wins.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "bertfit"))
    run = mlflow.start_run(run_name=run_name)
    experiment = mlflow.get_experiment(run.info.experiment_id).name
    logger.info("MLflow run %s in experiment %r at %s", run.info.run_id, experiment, uri)
    return mlflow


def _summary_writer(log_dir: str):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboardX has the same writer
        from tensorboardX import SummaryWriter
    logger.info("TensorBoard logs in %s", log_dir)
    return SummaryWriter(log_dir=log_dir)
