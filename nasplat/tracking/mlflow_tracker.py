"""MLflow: one run per search (study), a nested run per trial, the Pareto front as artifacts.

What a user sees (the contract in docs/DESIGN.md, "Tracking"):

- the search run `search-<study>`: the search settings as params, `pareto_size` and
  `best_<objective>` (the task's; ZoomNAS: `best_wholebody_AP`) as its metrics, and what the experiment cost so far, logged by each phase
  as it ends (`tracking.costs`: `cost.<phase>.wall_s`, `.core_hours`, `.gpu_hours`,
  `cost.total.*`), the Pareto figures (`pareto_front.png`, and
  `pareto_front.html` with plotly.js embedded, so it works offline), tags linking the supernet
  run (`nasplat.supernet_run`, `nasplat.supernet_checkpoint`) and the best trial's run
  (`best_trial` = `trial-N`, `best_trial_run_id`), and a description with those links;
- a nested run `trial-N` per trial with the driver's start and end of its evaluation as the run's
  times, the arch's choices as params, the task's metrics (ZoomNAS: `wholebody_AP`,
  `wholebody_AR`, `<part>_AP`; classification: `top1`, `top5`), `GFLOPs`,
  `GFLOPs_<part>` and `num_params` as metrics, the tag `pareto` (`true` / `false`) and, on the
  front, the arch as the artifact `arch.json` (the exported best subnet under `best_subnet/`).

Only the driver logs. Trials are keyed by the tag `nasplat.trial`, so `sync` can log, after a
crash, the finished trials the store has and MLflow lacks, without duplicating any.

Trial runs are written by one background thread of the driver (`log_trial` only enqueues), so a
slow tracking store (a local SQLite MLflow store costs ~0.1 s per nested run) does not hold up
asking and telling; `finish` and `close` wait for the queue to drain. A trial the thread had not
written when the driver died is written by the next run's `sync`.
"""

from __future__ import annotations

import logging
import math
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param, RunTag

from nasplat.errors import NasplatError
from nasplat.metrics.ranking import trailing_agreement
from nasplat.search.evaluation import DEFAULT_OBJECTIVE
from nasplat.search.pareto import pareto_indices
from nasplat.space import Arch
from nasplat.store import StoredTrial, redact_text
from nasplat.tracking.client import NOTE, SOURCE_NAME, client_for, command_line, experiment_id, tracking_error
from nasplat.tracking.plots import FrontPoint, pareto_html, pareto_png

log = logging.getLogger(__name__)

ROLE, STUDY, TRIAL, PARETO = "nasplat.role", "nasplat.study", "nasplat.trial", "pareto"
SUPERNET_RUN, SUPERNET_CHECKPOINT = "nasplat.supernet_run", "nasplat.supernet_checkpoint"
BEST_TRIAL, BEST_TRIAL_RUN = "best_trial", "best_trial_run_id"
ARCH_ARTIFACT, BEST_SUBNET = "arch.json", "best_subnet"


def trial_metrics(evaluation: Any) -> dict[str, float]:
    """The few metrics of a trial run: the task's (`Evaluation.reported_metrics`; ZoomNAS's
    whole-body AP and AR and AP per part), GFLOPs in total and per part, and the parameter count
    (`num_params`: MLflow's "Parameters" are the arch choices)."""
    out = dict(evaluation.reported_metrics())
    out["GFLOPs"] = float(evaluation.gflops["total"])
    out.update({f"GFLOPs_{k}": float(v) for k, v in evaluation.gflops.items() if k != "total"})
    out["num_params"] = float(evaluation.params)
    return out


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


class MlflowTracker:
    """Logs a search to MLflow at `uri` (a local `sqlite:///...` store or a server URL).

    artifact_dir: where artifacts go for a new experiment in a local store (a server decides
        itself); the driver normally opened the experiment before (`orchestration.tracking`);
    supernet: (run id, checkpoint path) of the supernet the search evaluates, linked from the
        search run (either may be None);
    source: the runs' source in the UI (default: this process's command);
    latency: arch -> predicted ms, logged per trial as `latency_ms` (a latency search);
    objective: the name of the metric the search maximises (the task's `Task.objective`), which
        names the search run's `best_<objective>` and a trial's `predicted_<objective>`.
    Raises NasplatError (URI redacted) when the store cannot be opened."""

    def __init__(self, uri: str, experiment: str, artifact_dir: Path | str | None = None, *,
                 supernet: tuple[str | None, str | None] = (None, None), source: str | None = None,
                 latency: Callable[[Arch], float] | None = None, objective: str = DEFAULT_OBJECTIVE) -> None:
        self.uri = uri
        self.objective = objective
        self._latency = latency
        self.experiment = experiment
        self._client_now: Any = None  # made at first use: constructing the tracker writes nothing
        self._artifact_dir = artifact_dir
        self._supernet = supernet
        self._source = source
        self._latency = latency
        self._experiment_id: str | None = None
        self._parent: str | None = None
        self._study: str | None = None
        self._logged: set[int] = set()
        self._queue: queue.Queue[tuple[StoredTrial, float | None, float | None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._errors: list[str] = []

    @property
    def _client(self) -> Any:
        if self._client_now is None:
            self._client_now = client_for(self.uri)
        return self._client_now

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

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            raise NasplatError("MlflowTracker.start was not called")
        return self._experiment_id

    def _open(self, study_name: str) -> None:
        self._experiment_id = experiment_id(self._client, self.uri, self.experiment, self._artifact_dir)
        self._study = study_name

    def _source_name(self) -> str:
        return redact_text(self._source or command_line(), self.uri)

    def _trial_runs(self) -> list[Any]:
        return self._search(f"tags.`{ROLE}` = 'trial' and tags.`{STUDY}` = '{self._study}'")

    def start(self, study_name: str, params: dict[str, str]) -> None:
        """Find or create the parent run `search-<study_name>`, log the search settings and link
        the supernet run."""
        self._open(study_name)
        found = self._search(f"tags.`{ROLE}` = 'search' and tags.`{STUDY}` = '{study_name}'")
        if found:
            self._parent = found[0].info.run_id
            self._client.update_run(self._parent, status="RUNNING")
            known = found[0].data.params
        else:
            run = self._client.create_run(self.experiment_id, run_name=f"search-{study_name}", tags={
                ROLE: "search", STUDY: study_name, "mlflow.source.type": "LOCAL", SOURCE_NAME: self._source_name(),
            })
            self._parent = run.info.run_id
            known = {}
        new = [Param(k, redact_text(str(v), self.uri)) for k, v in params.items() if k not in known]
        run_id, checkpoint = self._supernet
        links = [RunTag(k, v) for k, v in ((SUPERNET_RUN, run_id), (SUPERNET_CHECKPOINT, checkpoint)) if v]
        if new or links:
            self._client.log_batch(self._parent, params=new, tags=links)
        self._logged = {int(r.data.tags[TRIAL]) for r in self._trial_runs() if TRIAL in r.data.tags}

    @property
    def parent_run_id(self) -> str:
        if self._parent is None:
            raise NasplatError("MlflowTracker.start was not called")
        return self._parent

    def log_trial(self, trial: StoredTrial, started: float | None = None, ended: float | None = None) -> None:
        """Queue a nested run for `trial` (written by the background thread). `started` and
        `ended` (seconds since the epoch) are when its evaluation began and finished: the run's
        start and end time (unknown: when the run is written)."""
        if trial.number in self._logged:
            return
        self._logged.add(trial.number)
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="mlflow-logger", daemon=True)
            self._thread.start()
        self._queue.put((trial, started, ended))

    def _drain(self) -> None:
        for trial, started, ended in iter(self._queue.get, None):
            try:
                self._write_trial(trial, started, ended)
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

    def _write_trial(self, trial: StoredTrial, started: float | None, ended: float | None) -> None:
        """A nested run: params = the arch's flat choices; metrics = `trial_metrics`."""
        parent = self.parent_run_id
        tags = {
            "mlflow.parentRunId": parent,
            ROLE: "trial",
            STUDY: self._study or "",
            TRIAL: str(trial.number),
            "state": trial.state,
            SOURCE_NAME: self._source_name(),
        }
        run = self._client.create_run(self.experiment_id, start_time=_ms(started), run_name=f"trial-{trial.number}",
                                      tags=tags)
        params = [Param(k, str(v)) for k, v in trial.arch.to_flat().items()]
        stamp = _ms(ended) or int(time.time() * 1000)
        metrics: list[Metric] = []
        extra_tags: list[RunTag] = []
        if trial.evaluation is not None:
            values = trial_metrics(trial.evaluation)
            if self._latency is not None:
                values["latency_ms"] = float(self._latency(trial.arch))
            metrics = [Metric(k, v, stamp, 0) for k, v in values.items()]
        elif trial.error:
            extra_tags.append(RunTag("error", trial.error[:4000]))
        if trial.prediction is not None:  # under their own names: a prediction is not a result
            metrics += [Metric(f"predicted_{self.objective}", trial.prediction.ap, stamp, 0),
                        Metric(f"predicted_{self.objective}_std", trial.prediction.std, stamp, 0)]
            extra_tags.append(RunTag("screened_out", str(len(trial.prediction.screened_out))))
        self._client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=extra_tags)
        self._client.set_terminated(run.info.run_id, status="FINISHED" if trial.evaluation is not None else "FAILED",
                                    end_time=_ms(ended))

    def sync(self, trials: list[StoredTrial]) -> None:
        """Log every finished trial of the store that MLflow lacks (after a crash), each run
        spanning the trial's evaluation as the store recorded it, not the time of this call."""
        for t in trials:
            if t.tell_seq is not None and t.number not in self._logged:
                self.log_trial(t, t.started, t.ended)

    def finish(self, trials: list[StoredTrial], budget_gflops: float | None, finished: bool) -> list[str]:
        """Tag every trial run `pareto=true` or `false`, log `arch.json` on each front trial's
        run, log the front as `pareto_front.png` and `pareto_front.html` on the parent run, link
        the best trial, and end the parent run when the search is finished. Returns the artifact
        names logged on the parent run."""
        self.sync(trials)
        self.flush()
        done = [t for t in trials if t.evaluation is not None]
        points = [(t.evaluation.total_gflops, t.evaluation.score) for t in done]  # type: ignore[union-attr]
        front = {done[i].number for i in pareto_indices(points)}
        by_number = {t.number: t for t in trials}
        run_of: dict[int, str] = {}
        for run in self._trial_runs():
            number = int(run.data.tags.get(TRIAL, -1))
            run_of[number] = run.info.run_id
            want = "true" if number in front else "false"
            if run.data.tags.get(PARETO) != want:
                self._client.set_tag(run.info.run_id, PARETO, want)
            if number in front and number in by_number:
                self._client.log_text(run.info.run_id, by_number[number].arch.to_json(), ARCH_ARTIFACT)
        front_points = [
            FrontPoint(t.number, t.evaluation.total_gflops, t.evaluation.score, t.number in front)  # type: ignore[union-attr]
            for t in done
        ]
        out: list[str] = []
        if front_points:
            with tempfile.TemporaryDirectory() as tmp:
                title = f"{self._study}: {len(done)} trials, {len(front)} on the Pareto front"
                png = pareto_png(front_points, budget_gflops, Path(tmp) / "pareto_front.png", title, score=self._score_label)
                html = pareto_html(front_points, budget_gflops, Path(tmp) / "pareto_front.html", title,
                                   score=self._score_label)
                figures = [png, html]
                if self._latency is not None:  # the trials again, against predicted latency
                    xy = [(float(self._latency(t.arch)), t.evaluation.score) for t in done]  # type: ignore[union-attr]
                    on = set(pareto_indices(xy))
                    latency_points = [FrontPoint(t.number, x, y, i in on) for i, (t, (x, y)) in enumerate(zip(done, xy))]
                    ms = "predicted latency (ms)"
                    figures.append(pareto_png(latency_points, None, Path(tmp) / "pareto_front_latency.png", title, ms,
                                               self._score_label))
                    figures.append(pareto_html(latency_points, None, Path(tmp) / "pareto_front_latency.html", title, ms,
                                                self._score_label))
                for p in figures:
                    self._client.log_artifact(self.parent_run_id, str(p))
                    out.append(p.name)
            best = max(done, key=lambda t: t.evaluation.score)  # type: ignore[union-attr]
            self._client.log_batch(self.parent_run_id, metrics=[
                Metric("pareto_size", float(len(front)), int(time.time() * 1000), 0),
                Metric(f"best_{self.objective}", best.evaluation.score, int(time.time() * 1000), 0),  # type: ignore[union-attr]
            ], tags=[RunTag(BEST_TRIAL, f"trial-{best.number}")]
                + ([RunTag(BEST_TRIAL_RUN, run_of[best.number])] if best.number in run_of else []))
            self._client.set_tag(self.parent_run_id, NOTE, self._note(best.number, run_of.get(best.number), len(front)))
            self._log_predictor(trials)
        self._client.set_terminated(self.parent_run_id, status="FINISHED" if finished else "KILLED")
        return out

    def _log_predictor(self, trials: list[StoredTrial]) -> None:
        """The accuracy predictor's agreement with the measurements that followed its picks, as
        the search went: `predictor_kendall_tau` and `predictor_rmse` over its last 20 evaluated
        picks, at step n (its n-th evaluated pick), on the search run."""
        picks = sorted((t for t in trials if t.prediction is not None and t.evaluation is not None),
                       key=lambda t: t.tell_seq or 0)
        if not picks:
            return
        series = trailing_agreement([t.prediction.ap for t in picks], [t.evaluation.score for t in picks])  # type: ignore[union-attr]
        logged = {m.step for m in self._client.get_metric_history(self.parent_run_id, "predictor_rmse")}
        now = int(time.time() * 1000)
        metrics = [Metric(f"predictor_{name}", row[name], now, int(row["n"])) for row in series
                   if int(row["n"]) not in logged  # a resumed search's finish logs only the new steps
                   for name in ("kendall_tau", "rmse") if not math.isnan(row[name])]
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self._client.log_batch(self.parent_run_id, metrics=metrics[start:start + 1000])

    def _note(self, best: int, best_run: str | None, n_front: int) -> str:
        """The search run's description (markdown, rendered by the UI) with links to the best
        trial's run and the supernet run."""
        def link(name: str, run_id: str | None) -> str:
            return f"[{name}](#/experiments/{self._experiment_id}/runs/{run_id}?workflowType=machine_learning)" if run_id else name

        lines = [f"Best trial: {link(f'trial-{best}', best_run)}; {n_front} trials on the Pareto front "
                 f"(tag `pareto = 'true'`)."]
        run_id, checkpoint = self._supernet
        if run_id or checkpoint:
            lines.append(f"Supernet: {link('supernet run', run_id)}" + (f", checkpoint `{checkpoint}`" if checkpoint else "") + ".")
        return "\n\n".join(lines)

    @property
    def _score_label(self) -> str:
        return "whole-body AP" if self.objective == DEFAULT_OBJECTIVE else self.objective

    def log_best_subnet(self, study_name: str, trial: int, directory: Path) -> str | None:
        """Log the files of an exported subnet (`directory`) under `best_subnet/` of trial
        `trial`'s run of study `study_name`. Returns that run's id, None when the trial has no
        run (it was not tracked). Changes no run's state. Raises NasplatError (redacted)."""
        try:
            self._open(study_name)
            runs = [r for r in self._trial_runs() if r.data.tags.get(TRIAL) == str(trial)]
            if not runs:
                return None
            run_id = runs[0].info.run_id
            self._client.log_artifacts(run_id, str(directory), BEST_SUBNET)
            return run_id
        except NasplatError:
            raise
        except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
            raise tracking_error(self.uri, "cannot log the exported subnet to MLflow", e) from None
