"""The search and export phases of an experiment, as `nasplat search`, `nasplat run` and
`nasplat status` call them.

`run_search(experiment)` builds the experiment's objective and evaluator pool (Ray actors on the
Ray that `cluster.init_ray` starts or joins, or one in-process slot), runs or resumes the study
through the driver, logs it to MLflow and records the phase. `export_best` writes the chosen
subnet, records the export and logs its files on the trial's MLflow run; `publish_export` (which it
calls) writes any subnet's export folder and registers it in the experiment's MLflow Model Registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nasplat.config import Experiment
from nasplat.errors import ConfigError, StoreError
from nasplat.files import file_sha256
from nasplat.interrupt import set_activity
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.latency import check_budgets, latency_cost
from nasplat.orchestration.driver import ProgressUpdate, SearchResult, open_search, summarize
from nasplat.orchestration.phases import Phase, Phases
from nasplat.orchestration.tracking import supernet_run, tracked_phase_cost
from nasplat.orchestration.pool import EvaluatorPool, LocalEvaluatorPool, RayEvaluatorPool
from nasplat.search import LatencyCost
from nasplat.search.objectives import AnalyticFactory, ObjectiveFactory
from nasplat.space import Arch
from nasplat.store import load_current_study
from nasplat.tasks import get_task
from nasplat.subnet import WholeBodyFactory, latest_checkpoint
from nasplat.subnet.export import ARCH, CARD, META, ONNX, WEIGHTS
from nasplat.tracking import MlflowTracker
from nasplat.tracking.registry import RegisteredVersion, find_version, register_export

log = logging.getLogger(__name__)


def objective_factory(experiment: Experiment, name: str | None = None, work: int = 0) -> ObjectiveFactory:
    """The picklable factory of the experiment's objective (`search.objective` unless `name`), as
    its task makes it (`Task.objective_factory`). `work`: the analytic objective's simulated
    duration. Raises ConfigError for a name the task does not have."""
    task = get_task(experiment.task)
    name = name or experiment.search.objective
    if name not in task.search_objectives:
        raise ConfigError(f"unknown objective {name!r}; allowed: {', '.join(sorted(task.search_objectives))}",
                          source=str(experiment.path), key="search.objective")
    factory = task.objective_factory(experiment, name, "cuda" if experiment.cluster.use_gpu else "cpu")
    return dataclasses.replace(factory, work=work) if work and isinstance(factory, AnalyticFactory) else factory


def pool_for(experiment: Experiment, factory: ObjectiveFactory, *, local: bool = False) -> Callable[[], EvaluatorPool]:
    """What the search evaluates on, made when there is work left: `search.num_evaluators` Ray
    actors (each `cluster.cpus_per_worker` CPUs and threads, one GPU with `cluster.use_gpu`) on
    the Ray at `cluster.address` (None: embedded local Ray), or with `local` one slot in this
    process."""
    if local:
        return lambda: LocalEvaluatorPool(factory)
    n, cluster = experiment.search.num_evaluators, experiment.cluster
    gpus = 1.0 if cluster.use_gpu else 0.0

    def make() -> EvaluatorPool:
        embedded = cluster.address is None
        init_ray(cluster.address, num_cpus=n * cluster.cpus_per_worker if embedded else None,
                 num_gpus=int(n * gpus) if gpus and embedded else None, env=cluster.runtime_env)
        return RayEvaluatorPool(factory, n, cluster.cpus_per_worker, gpus)

    return make


def make_tracker(experiment: Experiment, latency: LatencyCost | None = None) -> MlflowTracker:
    """The search tracker of the experiment, linking its search run to the supernet's training
    run and checkpoint when they are known (and logging predicted latency with `latency`)."""
    state = Phases(experiment).current()
    return MlflowTracker(experiment.tracking_uri, experiment.tracking_experiment, experiment.artifact_location,
                         supernet=(supernet_run(experiment), state.checkpoint if state else None),
                         latency=None if latency is None else latency.predict,
                         objective=get_task(experiment.task).objective)


_FACTORY_NAMES = {AnalyticFactory: "analytic", WholeBodyFactory: "wholebody"}


def run_search(
    experiment: Experiment,
    *,
    objective: ObjectiveFactory | str | None = None,
    new_study: bool = False,
    study_name: str | None = None,
    progress: Callable[[ProgressUpdate], None] | None = None,
    local: bool = False,
    track: bool = True,
    latency: LatencyCost | None = None,
) -> SearchResult:
    """Run or resume the experiment's search to `search.n_trials` COMPLETE trials, logging to
    MLflow, and return the result (best trial, Pareto front, all trials).

    objective: a factory (called once in each evaluator process), an objective name, or None for
        `search.objective`. Its name (for a factory: `analytic` or `wholebody` by type, else
        `custom`) is part of the stored study's identity.
    local: evaluate in this process, one at a time (no Ray); otherwise on Ray actors, joined to
        `cluster.address` when the experiment has one (see `cluster.for_command`).
    study_name: resume (or, with `new_study`, create) this study of the experiment (`--study`).
    A study that is already finished is only read: neither the study nor the phase row is
    written, and no evaluator is started.
    latency: the search's latency cost; None: `latency_cost(experiment)` (profiles the table
        into the output directory when the search uses latency and it is missing).
    Raises BudgetError and ConfigError before anything is written, StoreError (the message names
    --new-study), NasplatError.
    """
    set_activity("search")
    if objective is None or isinstance(objective, str):
        factory = objective_factory(experiment, objective)
        name = objective or experiment.search.objective
    else:
        factory = objective
        name = _FACTORY_NAMES.get(type(objective), getattr(objective, "name", "custom"))
    if latency is None:
        latency = latency_cost(experiment)
    check_budgets(experiment, latency)  # before the tracker opens (and creates) its store
    # the search samples the pinned space (search.fix), whose archs the full-space objective evaluates
    loop = open_search(experiment.search_space, experiment.search, study=experiment.name,
                       storage_url=experiment.storage_url, objective=name, new_study=new_study, study_name=study_name,
                       progress=progress, tracker=make_tracker(experiment, latency) if track else None, latency=latency,
                       cost_parts=get_task(experiment.task).gflops(experiment))
    phases = Phases(experiment)
    if loop.finished:  # a finished study is read, not written (the phase only if it lags behind)
        phases.reach(Phase.SEARCHED)
        return loop.run(pool_for(experiment, factory, local=local))
    phases.mark(Phase.SEARCHING)
    cluster = experiment.cluster
    slots = 1 if local else experiment.search.num_evaluators
    with tracked_phase_cost(experiment, "search", cpus=slots * (1 if local else cluster.cpus_per_worker),
                            gpus=0 if local or not cluster.use_gpu else slots, track=track):
        result = loop.run(pool_for(experiment, factory, local=local))
    if loop.finished:
        phases.mark(Phase.SEARCHED)
    return result


def report(experiment: Experiment, study_name: str | None = None) -> SearchResult:
    """Re-tag the Pareto front and re-log the figures from the store (`nasplat search --report`).
    Raises StoreError when the experiment has no study yet."""
    store = load_current_study(experiment.storage_url, experiment.name, study_name,
                               arch_type=experiment.space.arch_type)
    if store is None:
        raise StoreError(f"experiment {experiment.name!r} has no study yet; run `nasplat search` first", source=str(experiment.path))
    trials = store.trials()
    n_trials = store.attrs().get("n_trials", experiment.search.n_trials)
    done = sum(1 for t in trials if t.evaluation is not None)
    tracker = make_tracker(experiment)
    tracker.start(store.study_name, {"study": store.study_name})
    tracker.finish(trials, store.identity.budget_gflops, finished=done >= int(n_trials))
    return summarize(store, trials)


def export_inputs(experiment: Experiment, arch: Arch, checkpoint: Path | None, origin: dict[str, Any] | None,
                  net: Any = None) -> str | None:
    """A digest of what an export is made from (the arch, the supernet checkpoint's bytes, the
    recipe that recalibrates BN, the origin), or None when a network is given as it is."""
    if net is not None:
        return None
    what = {"arch": arch.to_json(), "origin": origin or {}, "recipe": asdict(experiment.trainer),
            "supernet": file_sha256(checkpoint or latest_checkpoint(experiment))}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_export(out: Path) -> dict[str, Any] | None:
    """The meta of a whole export folder (`meta.json` is written last), or None."""
    try:
        meta = json.loads((out / META).read_text())
    except (OSError, ValueError):
        return None
    whole = isinstance(meta, dict) and all((out / name).is_file() for name in (ARCH, WEIGHTS, CARD))
    return meta if whole else None


def unchanged_export(experiment: Experiment, out: Path, inputs: str, *,
                     register: bool) -> tuple[dict[str, Any], RegisteredVersion | None] | None:
    """(meta, version) when `out` already holds a whole export made from `inputs` and, when
    `register`, a model version tagged with them exists; else None (export it)."""
    done = _finished_export(out)
    if done is None or (done.get("origin") or {}).get("inputs") != inputs:
        return None
    found = find_version(experiment.tracking_uri, experiment.name, "origin.inputs", inputs) if register else None
    if register and found is None:
        return None
    log.info("%s already holds this export (inputs %s): not written or registered again", out, inputs)
    return done, found


def publish_export(experiment: Experiment, arch: Arch, out: Path, *, register: bool = True,
                   **export: Any) -> tuple[dict[str, Any], RegisteredVersion | None]:
    """Write the export folder `out` of `arch` (the task's `Task.export(experiment, arch, out,
    **export)`, for ZoomNAS `subnet.export_subnet`: weights, ONNX graph, meta, model card) and
    register it as a new version of the
    registered model named after the experiment in its MLflow tracking store (unless not
    `register`). Returns the meta and the registered version.

    An export is made once: its inputs' digest (`export_inputs`) is recorded as `origin.inputs`
    (meta and version tag), and when `out` already holds an export of the same inputs (and, when
    registering, a version tagged with them exists) nothing is written or registered again: a
    rerun of a finished `nasplat run` adds no version (`inputs=` gives the digest instead, for an
    export whose checkpoint file is written anew each time). Raises ArchError, TrainingError,
    NasplatError (tracking store)."""
    origin = dict(export.pop("origin", None) or {})
    inputs = export.pop("inputs", None) or export_inputs(experiment, arch, export.get("checkpoint"), origin,
                                                         export.get("net"))
    if inputs is not None:
        origin["inputs"] = inputs
        done = unchanged_export(experiment, out, inputs, register=register)
        if done is not None:
            return done
    task = get_task(experiment.task)
    meta = task.export(experiment, arch, out, origin=origin, **export)
    version = None
    if register:
        files = [out / name for name in (ONNX, CARD, META, ARCH) if (out / name).exists()]
        version = register_export(experiment.tracking_uri, experiment.tracking_experiment, experiment.name,
                                  task.load_exported(out), meta, files, artifact_dir=experiment.artifact_location)
    return meta, version


def export_best(experiment: Experiment, arch: Arch, *, checkpoint: Path | None = None,
                origin: dict[str, Any] | None = None, register: bool = True, trial: tuple[str, int] | None = None,
                **export: Any) -> tuple[Path, dict[str, Any], RegisteredVersion | None]:
    """Export `arch` (the search's choice) to `exports/best` under the storage root (written in the
    output directory and uploaded, for an object store), register it, and record
    the phase and its cost (`export` goes to the task's `Task.export`). With `trial` (study name, trial
    number) the exported files are also logged under `best_subnet/` of that trial's MLflow run.
    When it registers or logs to a trial, the costs so far go to the search run too (`cost.*`).
    Returns the directory, the export's meta and the registered version. Raises ArchError,
    TrainingError, NasplatError (tracking)."""
    set_activity("export")
    out = experiment.exports_dir / "best"
    with tracked_phase_cost(experiment, "export", cpus=1, track=register or trial is not None):
        meta, version = publish_export(experiment, arch, out, register=register, checkpoint=checkpoint, origin=origin,
                                       **export)
        experiment.storage.upload(out, "exports/best")
    Phases(experiment).mark(Phase.EXPORTED)
    if trial is not None:
        make_tracker(experiment).log_best_subnet(trial[0], trial[1], out)
    return out, meta, version


__all__ = ["export_best", "export_inputs", "make_tracker", "objective_factory", "pool_for", "publish_export", "report", "run_search", "unchanged_export"]
