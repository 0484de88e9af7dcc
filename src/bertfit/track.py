"""Experiment tracking: the Trainer integration that receives a run's logs, and what bertfit adds around it.

The output directory always gets the run's options and every evaluation (``bertfit.json``: ``config``,
``history``, ``log_history``). With ``track`` set, the Trainer's own integration (``MLflowCallback``,
``TensorBoardCallback``, ``WandbCallback``) receives the same logs as they happen. For MLflow, bertfit opens the run
itself, so that after saving it can add the bertfit options, the final validation metrics and the model directory
(as the artifact ``model``) to the same run before closing it.
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
from .exceptions import MissingDependencyError

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
        self.kind = config.track
        self.main_process = main_process
        self.uri = config.tracking_uri or DEFAULT_TRACKING_URIS.get(self.kind or "")
        if self.kind and not any(importlib.util.find_spec(m) for m in _MODULES[self.kind]):
            raise MissingDependencyError.for_extra(f"--track {self.kind}", "track", _MODULES[self.kind][0])
        self._mlflow = None

    @property
    def report_to(self) -> str:
        """The value for ``TrainingArguments.report_to``."""
        return self.kind or "none"

    def start(self) -> None:
        """Open the MLflow run (rank 0 only) that the Trainer's MLflowCallback then logs into."""
        if self.kind != "mlflow" or not self.main_process:
            return
        import mlflow

        if "://" not in self.uri or self.uri.startswith("file:"):
            # MLflow 3 keeps the file store (the offline default here) behind this opt-in; a user's own setting wins.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "bertfit"))
        run_name = Path(self.config.output_dir).name if self.config.output_dir else None
        run = mlflow.start_run(run_name=run_name)
        self._mlflow = mlflow
        logger.info(
            "MLflow run %s in experiment %r at %s",
            run.info.run_id,
            mlflow.get_experiment(run.info.experiment_id).name,
            self.uri,
        )

    def attach(self, callbacks: list[Any]) -> None:
        """Point the Trainer's TensorBoard callback at ``tracking_uri`` instead of its temporary work directory."""
        if self.kind != "tensorboard":
            return
        from transformers.integrations import TensorBoardCallback

        for callback in callbacks:
            if isinstance(callback, TensorBoardCallback):
                callback.logging_dir = os.path.join(self.uri, Path(self.config.output_dir or "run").name)

    def finish(self, metrics: dict[str, Any] | None, model_dir: str | Path | None) -> None:
        """Add bertfit's options, the final metrics and the saved model directory to the run, then close it."""
        if self._mlflow is None:
            return
        mlflow, self._mlflow = self._mlflow, None
        mlflow.log_params({f"bertfit.{k}": v for k, v in self.config.to_dict().items() if v is not None})
        if metrics:
            mlflow.log_metrics({f"final_{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
        if model_dir:
            mlflow.log_artifacts(str(model_dir), artifact_path="model")
        mlflow.end_run()

    @contextlib.contextmanager
    def closing_on_error(self) -> Iterator[None]:
        """Close an open MLflow run as FAILED when the block raises."""
        try:
            yield
        except BaseException:
            if self._mlflow is not None:
                self._mlflow.end_run(status="FAILED")
                self._mlflow = None
            raise
