"""MLflow: one run per search (study), a nested run per trial, the Pareto front as artifacts.

Only the driver logs. Trials are keyed by the tag `nasplat.trial`, so `sync` can log, after a
crash, the finished trials the store has and MLflow lacks, without duplicating any.

Trial runs are written by one background thread of the driver (`log_trial` only enqueues), so a
slow tracking store (a local SQLite MLflow store costs ~0.1 s per nested run) does not hold up
asking and telling; `finish` and `close` wait for the queue to drain. A trial the thread had not
written when the driver died is written by the next run's `sync`.
"""

from __future__ import annotations

import logging
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag

from nasplat.errors import NasplatError
from nasplat.search.pareto import pareto_indices
from nasplat.space import Arch
from nasplat.store import StoredTrial, redact_text
from nasplat.tracking.client import client_for, experiment_id
from nasplat.tracking.plots import FrontPoint, pareto_html, pareto_png

log = logging.getLogger(__name__)

ROLE, STUDY, TRIAL, PARETO = "nasplat.role", "nasplat.study", "nasplat.trial", "pareto"


class MlflowTracker:
    """Logs a search to MLflow at `uri` (a local `sqlite:///...` store or a server URL).

    artifact_dir: where artifacts go for a local store (a server decides itself).
    latency: arch -> predicted ms, logged per trial as `latency_ms` (a latency search).
    Raises NasplatError (URI redacted) when the store cannot be opened."""

    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None = None,
                 latency: Callable[[Arch], float] | None = None) -> None:
        self.uri = uri
        self._latency = latency
        self.experiment = experiment
        self._client = client_for(uri)
        self._artifact_dir = artifact_dir
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._study: str | None = None
        self._logged: set[int] = set()
        self._queue: queue.Queue[StoredTrial | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []

    # --- runs --------------------------------------------------------------------------------
    def _search(self, filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        for _ in range(10_000):  # pages of 1000
            page = self._client.search_runs(
                [self._experiment_id], filter_string=filter_string, max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        return runs

    def start(self, study_name: str, params: dict[str, str]) -> None:
        """Find or create the parent run of `study_name` and log the search settings."""
        self._experiment_id = experiment_id(self._client, self.uri, self.experiment, self._artifact_dir)
        self._study = study_name
        found = self._search(f"tags.`{ROLE}` = 'search' and tags.`{STUDY}` = '{study_name}'")
        if found:
            self._parent = found[0].info.run_id
            self._client.update_run(self._parent, status="RUNNING")
            known = found[0].data.params
        else:
            run = self._client.create_run(
                self._experiment_id, run_name=study_name, tags={ROLE: "search", STUDY: study_name}
            )
            self._parent = run.info.run_id
            known = {}
        new = [Param(k, redact_text(str(v), self.uri)) for k, v in params.items() if k not in known]
        if new:
            self._client.log_batch(self._parent, params=new)
        children = self._search(f"tags.`{ROLE}` = 'trial' and tags.`{STUDY}` = '{study_name}'")
        self._logged = {int(r.data.tags[TRIAL]) for r in children if TRIAL in r.data.tags}

    @property
    def parent_run_id(self) -> str:
        if self._parent is None:
            raise NasplatError("MlflowTracker.start was not called")
        return self._parent

    def log_trial(self, trial: StoredTrial) -> None:
        """Queue a nested run for `trial` (written by the background thread)."""
        if trial.number in self._logged:
            return
        self._logged.add(trial.number)
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="mlflow-logger", daemon=True)
            self._thread.start()
        self._queue.put(trial)

    def _drain(self) -> None:
        for trial in iter(self._queue.get, None):
            try:
                self._write_trial(trial)
            except Exception as e:  # noqa: BLE001 - keep logging the others; reported by flush
                self._logged.discard(trial.number)
                self._errors.append(f"trial {trial.number}: {redact_text(str(e).splitlines()[0], self.uri)}")

    def flush(self) -> None:
        """Wait until every queued trial is written; stop the thread. Logs a warning for each
        trial that could not be written (the next `sync` retries it)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        for err in self._errors:
            log.warning("MLflow logging failed for %s", err)
        self._errors.clear()

    def _write_trial(self, trial: StoredTrial) -> None:
        """A nested run: params = the arch's flat choices; metrics = GFLOPs parts, params, AP/AR."""
        parent = self.parent_run_id
        tags = {
            "mlflow.parentRunId": parent,
            ROLE: "trial",
            STUDY: self._study or "",
            TRIAL: str(trial.number),
            "state": trial.state,
        }
        run = self._client.create_run(self._experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        params = [Param(k, str(v)) for k, v in trial.arch.to_flat().items()]
        metrics: list[Metric] = []
        extra_tags: list[RunTag] = []
        if trial.evaluation is not None:
            ev = trial.evaluation
            values = {f"gflops_{k}": v for k, v in ev.gflops.items()}
            values["params"] = float(ev.params)
            if self._latency is not None:
                values["latency_ms"] = float(self._latency(trial.arch))
            for part, m in ev.metrics.items():
                for name, v in m.items():
                    values[f"{part}_{name}"] = float(v)
            metrics = [Metric(k, float(v), 0, 0) for k, v in values.items()]
        elif trial.error:
            extra_tags.append(RunTag("error", trial.error[:4000]))
        self._client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=extra_tags)
        self._client.set_terminated(run.info.run_id, status="FINISHED" if trial.evaluation is not None else "FAILED")

    def sync(self, trials: list[StoredTrial]) -> None:
        """Log every finished trial of the store that MLflow lacks (after a crash)."""
        for t in trials:
            if t.tell_seq is not None and t.number not in self._logged:
                self.log_trial(t)

    def finish(self, trials: list[StoredTrial], budget_gflops: float | None, finished: bool) -> list[str]:
        """Tag the non-dominated trials `pareto=true` (others that had it `false`), log the front
        as `pareto_front.png` and `pareto_front.html` on the parent run, and end the parent run
        when the search is finished. Returns the artifact names logged."""
        self.sync(trials)
        self.flush()
        done = [t for t in trials if t.evaluation is not None]
        points = [(t.evaluation.total_gflops, t.evaluation.ap) for t in done]  # type: ignore[union-attr]
        front = {done[i].number for i in pareto_indices(points)}
        children = self._search(f"tags.`{ROLE}` = 'trial' and tags.`{STUDY}` = '{self._study}'")
        for run in children:
            number = int(run.data.tags.get(TRIAL, -1))
            want = "true" if number in front else "false"
            if run.data.tags.get(PARETO, "false" if want == "false" else None) != want:
                self._client.set_tag(run.info.run_id, PARETO, want)
        front_points = [
            FrontPoint(t.number, t.evaluation.total_gflops, t.evaluation.ap, t.number in front)  # type: ignore[union-attr]
            for t in done
        ]
        out: list[str] = []
        if front_points:
            with tempfile.TemporaryDirectory() as tmp:
                title = f"{self._study}: {len(done)} trials, {len(front)} on the Pareto front"
                png = pareto_png(front_points, budget_gflops, Path(tmp) / "pareto_front.png", title)
                html = pareto_html(front_points, budget_gflops, Path(tmp) / "pareto_front.html", title)
                figures = [png, html]
                if self._latency is not None:  # the trials again, against predicted latency
                    xy = [(float(self._latency(t.arch)), t.evaluation.ap) for t in done]  # type: ignore[union-attr]
                    on = set(pareto_indices(xy))
                    latency_points = [FrontPoint(t.number, x, y, i in on) for i, (t, (x, y)) in enumerate(zip(done, xy))]
                    ms = "predicted latency (ms)"
                    figures.append(pareto_png(latency_points, None, Path(tmp) / "pareto_front_latency.png", title, ms))
                    figures.append(pareto_html(latency_points, None, Path(tmp) / "pareto_front_latency.html", title, ms))
                for p in figures:
                    self._client.log_artifact(self.parent_run_id, str(p))
                    out.append(p.name)
                self._client.log_metric(self.parent_run_id, "pareto_size", float(len(front)))
                best = max(done, key=lambda t: t.evaluation.ap)  # type: ignore[union-attr]
                self._client.log_metric(self.parent_run_id, "best_wholebody_AP", best.evaluation.ap)  # type: ignore[union-attr]
                self._client.set_tag(self.parent_run_id, "best_trial", str(best.number))
        self._client.set_terminated(self.parent_run_id, status="FINISHED" if finished else "KILLED")
        return out
