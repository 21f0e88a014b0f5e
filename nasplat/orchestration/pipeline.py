"""The whole job of an experiment in one resumable call: what `nasplat run` does, for a Python
caller too.

`run_pipeline(experiment)` checks what the job needs before anything is written (the task's
phases, the objective and budgets, services, the cluster's nodes, the latency table), takes the
experiment's lease, then runs the phases in order, each resuming where a crash or Ctrl-C left it:
train the supernet (from its latest checkpoint), search (from its study store), retrain the best
subnets (when the experiment has a `retrain:` section; from its Tune sweep) and export the best
subnet under the budget. What the caller sees of it goes through a `PipelineView`; the default
one logs. The CLI's view draws progress bars and tables (`nasplat.cli.run`).
"""

from __future__ import annotations

import _thread
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ContextManager, Protocol

from nasplat.config import Experiment
from nasplat.interrupt import set_activity
from nasplat.orchestration.driver import ProgressUpdate, SearchResult
from nasplat.orchestration.latency import check_budgets, latency_cost
from nasplat.orchestration.probe import check_task, preflight
from nasplat.orchestration.retrain import RetrainResult, run_retrain
from nasplat.orchestration.run import export_best, run_search
from nasplat.orchestration.tracking import open_experiment
from nasplat.orchestration.training import train_supernet
from nasplat.search import describe_budget
from nasplat.search.evaluation import score_name
from nasplat.tasks import get_task
from nasplat.tracking.registry import RegisteredVersion

log = logging.getLogger(__name__)

__all__ = ["NoSubnetError", "PipelineResult", "PipelineView", "LogView", "run_pipeline"]

PHASES = 4  # train, search, retrain, export


class NoSubnetError(Exception):
    """The search evaluated no subnet successfully: there is nothing to export."""


class PipelineView(Protocol):
    """What a caller of `run_pipeline` sees: one line per step, and the phases' progress."""

    def phase(self, number: int, line: str) -> None:
        """Phase `number` (of `PHASES`) starts: `line` says what it does."""

    def say(self, line: str) -> None:
        """A line of the job's account (where a phase's result is)."""

    def preflight(self, experiment: Experiment) -> None:
        """Check the cluster's nodes before any phase (`--cluster`); raise to stop."""

    def training(self, epochs: int) -> ContextManager[Callable[[dict[str, Any]], None] | None]:
        """The training's progress callback (`train_supernet(progress=)`), for the phase's span."""

    def search(self, n_trials: int, score: str) -> ContextManager[Callable[[ProgressUpdate], None] | None]:
        """The search's progress callback (`run_search(progress=)`); `score` names its objective."""

    def retrain(self) -> Callable[[dict[str, Any]], None] | None:
        """The retrain sweep's progress callback (`run_retrain(progress=)`)."""

    def retrained(self, result: RetrainResult | None) -> None:
        """The retrain phase's result."""


class LogView:
    """A `PipelineView` that logs each line (`nasplat.orchestration.pipeline` logger, INFO) and
    draws nothing; the cluster's nodes are checked by the preflight's own checks."""

    def phase(self, number: int, line: str) -> None:
        log.info("%d/%d %s", number, PHASES, line)

    def say(self, line: str) -> None:
        log.info("%s", line)

    def preflight(self, experiment: Experiment) -> None:
        from nasplat.orchestration.preflight import gather_checks, require_ok

        if experiment.cluster.address is not None:
            require_ok(experiment, gather_checks(experiment))

    @contextlib.contextmanager
    def training(self, epochs: int) -> Iterator[None]:
        yield None

    @contextlib.contextmanager
    def search(self, n_trials: int, score: str) -> Iterator[None]:
        yield None

    def retrain(self) -> None:
        return None

    def retrained(self, result: RetrainResult | None) -> None:
        if result is not None:
            for sub in result.subnets:
                log.info("retrained subnet %d (study trial %d) -> %s", sub.rank, sub.study_trial, sub.export)


@dataclass(frozen=True)
class PipelineResult:
    """What a finished job left: the supernet checkpoint, the search's result (its `best` is the
    exported subnet), the retrain sweep's result (None without a `retrain:` section), and the
    export's folder, meta and registered model version (None without tracking)."""

    checkpoint: Path
    search: SearchResult
    retrain: RetrainResult | None
    export_dir: Path
    export_meta: dict[str, Any]
    version: RegisteredVersion | None
    mlflow_experiment: str | None  # the MLflow experiment's id (None without tracking)


def _lost(lease: Any) -> None:
    """A lease held by a Python caller was taken over: stop the job in the main thread."""
    log.error("%s", lease.lost_message())
    _thread.interrupt_main()


def run_pipeline(
    experiment: Experiment,
    *,
    objective: str | None = None,
    new_study: bool = False,
    study_name: str | None = None,
    track: bool = True,
    view: PipelineView | None = None,
    hold: Callable[[Experiment], Any] | None = None,
) -> PipelineResult:
    """Train, search, retrain and export the experiment's best subnet (see the module doc);
    every phase resumes what an earlier call left.

    objective, new_study, study_name: as `run_search` (`--objective`, `--new-study`, `--study`).
    track: log to MLflow (training, search, retraining) and register the export.
    view: what the caller sees (default `LogView`).
    hold: takes the experiment's lease until the caller's command ends (`nasplat run` passes its
        own); None: the lease is taken here and released when this call returns, and a driver
        that takes it over stops this one with KeyboardInterrupt.
    Raises ConfigError, BudgetError, StoreError (a second driver; nothing is written), the
    phases' errors, NoSubnetError when the search evaluated no subnet successfully.
    """
    view = view or LogView()
    check_task(experiment, "run")
    preflight(experiment, objective=objective, tracking=track)
    view.preflight(experiment)  # --cluster: one check per node, before any phase
    latency = None
    if experiment.search.uses_latency:  # profile (or load) the table and check the budgets before training
        if not experiment.latency_lut.exists():
            view.say(f"latency table: profiling {experiment.space.name} into {experiment.latency_lut}")
        latency = latency_cost(experiment)
        view.say(f"latency table {experiment.latency_lut}: {latency.device}")  # type: ignore[union-attr]
    check_budgets(experiment, latency)
    with contextlib.ExitStack() as stack:
        if hold is not None:
            hold(experiment)  # one driver per experiment: a second one stops here
        else:
            from nasplat.store.lease import ExperimentLease

            stack.enter_context(ExperimentLease(experiment.storage_url, experiment.name, source=str(experiment.path),
                                                on_lost=_lost))
        return _phases(experiment, view, latency, objective=objective, new_study=new_study, study_name=study_name,
                       track=track)


def _phases(experiment: Experiment, view: PipelineView, latency: Any, *, objective: str | None, new_study: bool,
            study_name: str | None, track: bool) -> PipelineResult:
    """The four phases, in order, with the lease held."""
    # on this driver, before any phase: the Ray workers of training log into it
    mlflow_experiment = open_experiment(experiment) if track else None
    set_activity("training")  # each phase named as soon as it is announced (a signal names it)
    view.phase(1, f"supernet: space {experiment.space.name}, output {experiment.output_dir}")
    with view.training(experiment.trainer.schedule.epochs) as update:
        checkpoint = train_supernet(experiment, progress=update, mlflow=track)
    view.say(f"supernet checkpoint: {checkpoint}")

    set_activity("search")
    s = experiment.search
    budget = (f", budget {describe_budget(s.budget_gflops, s.part_budgets)}"
              if s.budget_gflops is not None or s.part_budgets else ", no GFLOPs budget")
    view.phase(2, f"search: {s.sampler}, {s.n_trials} trials{budget}"
             + (f", {s.budget_latency_ms} ms" if s.budget_latency_ms else ""))
    with view.search(s.n_trials, score_name(get_task(experiment.task).objective)) as update:
        result = run_search(experiment, objective=objective, new_study=new_study, study_name=study_name,
                            progress=update, track=track, latency=latency)
    view.say(f"study {result.study_name}: {result.n_complete} completed, {result.n_failed} failed, "
             f"{len(result.pareto)} on the Pareto front")
    best = result.best
    if best is None:
        raise NoSubnetError("no subnet was evaluated successfully; nothing to export")

    rc = experiment.retrain
    retrained = None
    if rc is None:
        view.phase(3, "retrain: skipped (the experiment has no retrain: section)")
    else:
        set_activity("retrain")
        view.phase(3, f"retrain: top {rc.top_k} subnets, {rc.epochs} epochs, init {rc.init}, "
                 f"lr {list(rc.lr) if rc.lr else 'recipe'}")
        retrained = run_retrain(experiment, progress=view.retrain(), track=track)
        view.retrained(retrained)

    set_activity("export")
    ev = best.evaluation
    assert ev is not None  # the best trial is a COMPLETE one
    view.phase(4, f"export: trial {best.number}, {ev.score_name} {ev.score:.4f}, "
             f"{ev.total_gflops:.4f} GFLOPs")
    out, meta, version = export_best(experiment, best.arch, checkpoint=checkpoint,
                                     origin={"study": result.study_name, "trial": best.number},
                                     trial=(result.study_name, best.number) if track else None, register=track)
    g = meta["gflops"]
    parts = ", ".join(f"{k} {v:.4f}" for k, v in g.items() if k != "total")
    view.say(f"best subnet exported to {out}: {g['total']:.4f} GFLOPs" + (f" ({parts})" if parts else "")
             + f", {meta['params']:,} params")
    if version is not None:
        view.say(f"registered as {version.uri}")
    return PipelineResult(checkpoint=checkpoint, search=result, retrain=retrained, export_dir=out, export_meta=meta,
                          version=version, mlflow_experiment=mlflow_experiment)
