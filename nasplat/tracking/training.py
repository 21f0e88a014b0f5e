"""MLflow for supernet training: one run per supernet, resumed with it.

Written with an `MlflowClient` and an explicit run id (no fluent API, so nothing process-global
that another tracker in the same process could change), like the search tracker, and with the
same redaction of the tracking URI in every error. The run id is kept in a file beside the
checkpoints, so a resumed training continues the same run; a run the store no longer has (a fresh
tracking store) is replaced by a new one.

Under Ray Train this runs inside a worker, whose working directory is Ray's: the driver creates
the experiment (with its artifact location) first and hands its id in, so the worker creates
nothing and names its run's source after the driver's command, not Ray's `default_worker.py`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mlflow.entities import Metric, Param

from nasplat.files import atomic_write_text
from nasplat.store import redact_text
from nasplat.tracking.client import SOURCE_NAME, client_for, command_line, experiment_id, tracking_error

log = logging.getLogger(__name__)

ROLE = "nasplat.role"


class TrainingTracker:
    """The MLflow run of one supernet training at `uri`, experiment `experiment`.

    run_id_file: where the run id is kept (read on start, written when a run is created);
    artifact_dir: artifact location of a new experiment in a local store (used only without
        `experiment_id`);
    experiment_id: the experiment the driver already opened (`client.experiment_id`);
    source: the run's source in the UI (default: this process's command, `client.command_line`).
    Raises NasplatError (URI redacted) when the store cannot be opened or written.
    """

    def __init__(self, uri: str, experiment: str, run_id_file: Path, artifact_dir: Path | str | None = None, *,
                 experiment_id: str | None = None, source: str | None = None) -> None:
        self.uri = uri
        self.experiment = experiment
        self.run_id_file = run_id_file
        self._artifact_dir = artifact_dir
        self._experiment_id = experiment_id
        self._source = source
        self._client = client_for(uri)
        self._run_id: str | None = None

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def start(self, params: dict[str, object]) -> str:
        """Resume the stored run or create one named `supernet` (logging `params` once).
        Returns the run id."""
        exp_id = self._experiment_id or experiment_id(self._client, self.uri, self.experiment, self._artifact_dir)
        stored = self.run_id_file.read_text().strip() if self.run_id_file.is_file() else None
        try:
            if stored is not None:
                try:
                    self._client.update_run(stored, status="RUNNING")
                    self._run_id = stored
                    return stored
                except Exception:  # noqa: BLE001 - the stored run is gone (a fresh store): start anew
                    log.info("MLflow run %s not found; starting a new supernet run", stored)
            source = redact_text(self._source or command_line(), self.uri)
            run = self._client.create_run(exp_id, run_name="supernet",
                                          tags={ROLE: "supernet", SOURCE_NAME: source, "mlflow.source.type": "LOCAL"})
            self._run_id = run.info.run_id
            self._client.log_batch(self._run_id, params=[Param(k, redact_text(str(v), self.uri)) for k, v in params.items()])
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot start the MLflow training run", e) from None
        atomic_write_text(self._run_id, self.run_id_file)
        return self._run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log float metrics at `step`. Raises NasplatError (redacted)."""
        if self._run_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        try:
            self._client.log_batch(self._run_id, metrics=batch)
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot log training metrics to MLflow", e) from None

    def close(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED, or KILLED / FAILED when training stopped early)."""
        if self._run_id is None:
            return
        try:
            self._client.set_terminated(self._run_id, status=status)
        except Exception as e:  # noqa: BLE001 - closing must not hide the training's own outcome
            log.warning("%s", tracking_error(self.uri, "cannot end the MLflow training run", e))
        self._run_id = None


__all__ = ["TrainingTracker"]
