"""MLflow for the retrain phase: one run per sweep, nested under the study's search run, and one
nested run per Tune trial (params: the subnet's arch choices and the trial's hyperparameters;
metrics per epoch: per-part AP and AR, the loss).

Runs are found by their tags (`nasplat.sweep`, `nasplat.retrain_trial`), so a resumed sweep
continues the same runs instead of adding new ones. Only the Tune driver logs (through a Tune
callback), never the trial processes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param

from nasplat.store import redact_text
from nasplat.tracking.client import client_for, experiment_id, tracking_error

ROLE, STUDY, SWEEP, TRIAL = "nasplat.role", "nasplat.study", "nasplat.sweep", "nasplat.retrain_trial"
PARENT = "mlflow.parentRunId"


class RetrainTracker:
    """The MLflow runs of one retrain sweep at `uri`, experiment `experiment`.
    Raises NasplatError (URI redacted) when the store cannot be opened or written."""

    def __init__(self, uri: str, experiment: str, sweep: str, study: str | None, artifact_dir: Path | str | None = None) -> None:
        self.uri, self.experiment, self.sweep, self.study = uri, experiment, sweep, study
        self._artifact_dir = artifact_dir
        self._client = client_for(uri)
        self._experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._trials: dict[str, str] = {}

    def _find(self, filter_string: str) -> Any:
        runs = self._client.search_runs([self._experiment_id], filter_string=filter_string, max_results=1)
        return runs[0] if runs else None

    def start(self, params: dict[str, object]) -> str:
        """Find or create the sweep's run (nested under the study's search run when there is one)."""
        try:
            self._experiment_id = experiment_id(self._client, self.uri, self.experiment, self._artifact_dir)
            found = self._find(f"tags.`{ROLE}` = 'retrain' and tags.`{SWEEP}` = '{self.sweep}'")
            if found is not None:
                self.parent_run_id = found.info.run_id
                self._client.update_run(self.parent_run_id, status="RUNNING")
                return self.parent_run_id
            tags = {ROLE: "retrain", SWEEP: self.sweep}
            if self.study is not None:
                tags[STUDY] = self.study
                search = self._find(f"tags.`{ROLE}` = 'search' and tags.`{STUDY}` = '{self.study}'")
                if search is not None:
                    tags[PARENT] = search.info.run_id
            run = self._client.create_run(self._experiment_id, run_name=f"retrain {self.sweep}", tags=tags)
            self.parent_run_id = run.info.run_id
            self._client.log_batch(self.parent_run_id, params=[Param(k, redact_text(str(v), self.uri)) for k, v in params.items()])
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot start the MLflow retrain run", e) from None
        return self.parent_run_id

    def trial(self, trial_id: str, name: str, params: dict[str, object]) -> str:
        """The nested run of Tune trial `trial_id`, created (with `params`) on first use."""
        if trial_id in self._trials:
            return self._trials[trial_id]
        try:
            found = self._find(f"tags.`{SWEEP}` = '{self.sweep}' and tags.`{TRIAL}` = '{trial_id}'")
            if found is not None:
                run_id = found.info.run_id
                self._client.update_run(run_id, status="RUNNING")
            else:
                tags = {ROLE: "retrain-trial", SWEEP: self.sweep, TRIAL: trial_id, PARENT: str(self.parent_run_id)}
                run_id = self._client.create_run(self._experiment_id, run_name=name, tags=tags).info.run_id
                self._client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot start the MLflow run of a retrain trial", e) from None
        self._trials[trial_id] = run_id
        return run_id

    def has_trials(self, n: int) -> bool:
        """Whether the sweep's run and at least `n` trial runs exist (False when the store was
        deleted: the same command logs them again)."""
        try:
            self._experiment_id = experiment_id(self._client, self.uri, self.experiment, self._artifact_dir)
            if self._find(f"tags.`{ROLE}` = 'retrain' and tags.`{SWEEP}` = '{self.sweep}'") is None:
                return False
            runs = self._client.search_runs([self._experiment_id], max_results=max(n, 1),
                                            filter_string=f"tags.`{ROLE}` = 'retrain-trial' and tags.`{SWEEP}` = '{self.sweep}'")
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot read the MLflow retrain runs", e) from None
        return len(runs) >= n

    def restore_trial(self, trial_id: str, name: str, params: dict[str, object],
                      history: list[tuple[int, dict[str, float]]]) -> bool:
        """Log a finished Tune trial whose run is missing (a deleted store, a sweep finished while
        no callback logged it): its run with `params` and every epoch of `history`, ended.
        Returns False when the run exists already (nothing is logged)."""
        try:
            found = self._find(f"tags.`{SWEEP}` = '{self.sweep}' and tags.`{TRIAL}` = '{trial_id}'")
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot read the MLflow retrain runs", e) from None
        if found is not None:
            return False
        self.trial(trial_id, name, params)
        for epoch, metrics in history:
            self.log_epoch(trial_id, metrics, epoch)
        self.end_trial(trial_id)
        return True

    def log_epoch(self, trial_id: str, metrics: dict[str, float], epoch: int) -> None:
        run_id = self._trials.get(trial_id)
        if run_id is None or not metrics:
            return
        now = int(time.time() * 1000)
        try:
            self._client.log_batch(run_id, metrics=[Metric(k, float(v), now, int(epoch)) for k, v in metrics.items()])
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot log retrain metrics to MLflow", e) from None

    def end_trial(self, trial_id: str, status: str = "FINISHED") -> None:
        run_id = self._trials.get(trial_id)
        if run_id is not None:
            try:
                self._client.set_terminated(run_id, status=status)
            except Exception as e:  # noqa: BLE001
                raise tracking_error(self.uri, "cannot end the MLflow run of a retrain trial", e) from None

    def finish(self, best: dict[str, float], status: str = "FINISHED") -> None:
        """Log the best trial's metrics on the sweep's run and end it."""
        if self.parent_run_id is None:
            return
        now = int(time.time() * 1000)
        try:
            if best:
                self._client.log_batch(self.parent_run_id, metrics=[Metric(f"best_{k}", float(v), now, 0) for k, v in best.items()])
            self._client.set_terminated(self.parent_run_id, status=status)
        except Exception as e:  # noqa: BLE001
            raise tracking_error(self.uri, "cannot end the MLflow retrain run", e) from None


__all__ = ["RetrainTracker"]
