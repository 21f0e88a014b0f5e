"""The search driver: the only writer of the study store and of MLflow.

It asks the searcher for archs, records each as a trial, keeps every evaluator busy, tells the
searcher each result as soon as it arrives, retries a failed or lost evaluation on another
evaluator (at most `max_retries` times, then the trial is FAIL), and stops when the study has
`n_trials` COMPLETE trials.

Resume: on start the store marks trials a dead driver left RUNNING as FAIL ("killed") and their
archs are evaluated first, under new trials; the searcher is rebuilt by replaying the recorded
asks and tells in their recorded order, so a serial search continues exactly the sequence an
uninterrupted one would have produced.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Literal, Protocol

from nasplat.errors import NasplatError, StoreError
from nasplat.orchestration.pool import EvaluatorPool, LocalEvaluatorPool, RayEvaluatorPool, init_ray
from nasplat.search import EvolutionSettings, Searcher, build_searcher, pareto_indices, total_gflops_fn
from nasplat.search.objectives import ObjectiveFactory
from nasplat.space import Arch, SearchSpace
from nasplat.store import ExperimentStateStore, StoredTrial, StudyIdentity, StudyStore, open_study, redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchSettings:
    """Everything the driver needs, independent of the experiment file."""

    experiment: str  # experiment name: names the study and the state row
    sampler: str  # random | evolution | tpe | nsga2
    n_trials: int  # COMPLETE trials to reach
    budget_gflops: float | None
    seed: int
    objective: str  # analytic | wholebody (part of the study identity)
    storage_url: str  # SQLAlchemy URL of the study store
    num_evaluators: int = 1
    evolution: EvolutionSettings = EvolutionSettings()
    executor: Literal["ray", "local"] = "ray"
    ray_address: str | None = None  # None: embedded local Ray
    cpus_per_evaluator: int = 1  # also each evaluator's torch threads
    gpus_per_evaluator: float = 0.0
    max_retries: int = 2  # extra attempts of a failed/lost evaluation
    max_failures: int | None = None  # trials that may fail for good before the search stops (None: n_trials)


@dataclass(frozen=True)
class ProgressUpdate:
    done: int
    total: int
    failed: int
    running: int
    best_ap: float | None
    pareto_size: int


@dataclass(frozen=True)
class SearchResult:
    study_name: str
    storage: str  # redacted URL
    n_complete: int
    n_failed: int
    best: StoredTrial | None  # highest whole-body AP (all COMPLETE trials are within budget)
    pareto: tuple[StoredTrial, ...]  # sorted by GFLOPs
    trials: tuple[StoredTrial, ...]
    driver_seconds: float = 0.0  # time the driver spent outside waiting for evaluators
    wall_seconds: float = 0.0
    evaluated: int = 0  # evaluations finished in this run (including failures)
    extra: dict[str, float] = field(default_factory=dict)


class TrialLogger(Protocol):
    """What the driver needs from experiment tracking (`nasplat.tracking.MlflowTracker`)."""

    def start(self, study_name: str, params: dict[str, str]) -> None: ...

    def sync(self, trials: list[StoredTrial]) -> None: ...

    def log_trial(self, trial: StoredTrial) -> None: ...

    def flush(self) -> None: ...

    def finish(self, trials: list[StoredTrial], budget_gflops: float | None, finished: bool) -> object: ...


def identity_of(space: SearchSpace, settings: SearchSettings) -> StudyIdentity:
    extra = json.dumps(asdict(settings.evolution), sort_keys=True) if settings.sampler == "evolution" else ""
    return StudyIdentity(
        space_fingerprint=space.fingerprint(),
        objective=settings.objective,
        sampler=settings.sampler,
        seed=settings.seed,
        budget_gflops=settings.budget_gflops,
        sampler_settings=extra,
    )


def replay(searcher: Searcher, trials: list[StoredTrial]) -> int:
    """Rebuild `searcher` from stored trials by repeating its asks and tells in recorded order.
    Returns the number of tells. Raises StoreError when a replayed ask proposes a different arch
    than the one stored (the study was made by a different searcher version)."""
    asks = [t for t in trials if t.ask_seq is not None]  # in trial order = ask order
    tells = sorted((t for t in trials if t.tell_seq is not None), key=lambda t: t.tell_seq or 0)
    told = 0
    for t in asks:
        while told < len(tells) and (tells[told].tell_seq or 0) < (t.ask_seq or 0):
            searcher.tell(tells[told].arch, tells[told].evaluation)
            told += 1
        arch = searcher.ask()
        if arch.key() != t.key:
            raise StoreError(
                f"replaying trial {t.number} proposed a different arch than the stored one; the "
                f"searcher changed since the study was made, pass --new-study to start a new study",
                key=f"trial {t.number}",
            )
    for t in tells[told:]:
        searcher.tell(t.arch, t.evaluation)
    return len(tells)


def _make_pool(settings: SearchSettings, factory: ObjectiveFactory) -> EvaluatorPool:
    if settings.executor == "local":
        return LocalEvaluatorPool(factory)
    init_ray(
        settings.ray_address,
        num_cpus=settings.num_evaluators * settings.cpus_per_evaluator if settings.ray_address is None else None,
        num_gpus=int(settings.num_evaluators * settings.gpus_per_evaluator) if settings.gpus_per_evaluator else None,
    )
    return RayEvaluatorPool(factory, settings.num_evaluators, settings.cpus_per_evaluator, settings.gpus_per_evaluator)


def summarize(store: StudyStore, trials: list[StoredTrial], **kw: float) -> SearchResult:
    done = [t for t in trials if t.state == "COMPLETE" and t.evaluation is not None]
    failed = [t for t in trials if t.outcome == "failed"]
    best = max(done, key=lambda t: t.evaluation.ap) if done else None  # type: ignore[union-attr]
    points = [(t.evaluation.total_gflops, t.evaluation.ap) for t in done]  # type: ignore[union-attr]
    pareto = tuple(done[i] for i in pareto_indices(points))
    return SearchResult(
        study_name=store.study_name,
        storage=store.display_url,
        n_complete=len(done),
        n_failed=len(failed),
        best=best,
        pareto=pareto,
        trials=tuple(trials),
        driver_seconds=float(kw.get("driver_seconds", 0.0)),
        wall_seconds=float(kw.get("wall_seconds", 0.0)),
        evaluated=int(kw.get("evaluated", 0)),
    )


@dataclass
class _Flight:
    number: int
    arch: Arch
    attempts: int = 0
    worker: int | None = None


def drive(
    space: SearchSpace,
    settings: SearchSettings,
    factory: ObjectiveFactory,
    *,
    new_study: bool = False,
    progress: Callable[[ProgressUpdate], None] | None = None,
    tracker: TrialLogger | None = None,
    pool: EvaluatorPool | None = None,
) -> SearchResult:
    """Run or resume the search to `settings.n_trials` COMPLETE trials.

    Raises BudgetError (budget below the smallest arch, or sampling cannot meet it), StoreError
    (store unreachable or not matching; the message names --new-study), NasplatError when more
    than `max_failures` trials fail for good or the evaluators keep dying.
    """
    wall_start = time.perf_counter()
    cost = total_gflops_fn(space)
    searcher = build_searcher(
        settings.sampler, space, cost, settings.budget_gflops, settings.seed, evolution=settings.evolution
    )  # BudgetError before anything is stored
    store = open_study(settings.storage_url, settings.experiment, identity_of(space, settings), new_study=new_study)
    store.set_attr("n_trials", settings.n_trials)
    store.set_attr("budget_gflops", settings.budget_gflops)
    states = ExperimentStateStore(settings.storage_url)
    states.update(settings.experiment, phase="searching")
    requeue = deque(store.recover())
    trials = store.trials()
    n_told = replay(searcher, trials)
    done_points = [(t.evaluation.total_gflops, t.evaluation.ap) for t in trials if t.evaluation is not None]
    n_complete = len(done_points)
    n_failed = sum(1 for t in trials if t.outcome == "failed")
    max_failures = settings.n_trials if settings.max_failures is None else settings.max_failures
    if tracker is not None:
        tracker.start(
            store.study_name,
            {
                "sampler": settings.sampler,
                "n_trials": str(settings.n_trials),
                "budget_gflops": str(settings.budget_gflops),
                "seed": str(settings.seed),
                "objective": settings.objective,
                "num_evaluators": str(settings.num_evaluators),
                "storage": redact_url(settings.storage_url),
                "study": store.study_name,
                "space_fingerprint": space.fingerprint(),
            },
        )
        tracker.sync(trials)

    def report() -> None:
        if progress is not None:
            best = max((p[1] for p in done_points), default=None)
            progress(
                ProgressUpdate(n_complete, settings.n_trials, n_failed, len(inflight), best, len(pareto_indices(done_points)))
            )

    inflight: dict[int, _Flight] = {}
    retry: deque[_Flight] = deque()
    driver_time = 0.0
    evaluated = 0
    own_pool = pool is None
    report()
    if n_complete < settings.n_trials:
        pool = pool or _make_pool(settings, factory)
        try:
            max_steps = (settings.n_trials + max_failures + len(requeue) + 1) * (settings.max_retries + 1) + 1
            for _ in range(max_steps):
                t0 = time.perf_counter()
                for _slot in range(pool.idle()):
                    if retry:
                        f = retry.popleft()
                    elif n_complete + len(inflight) + len(retry) >= settings.n_trials:
                        break
                    elif requeue:
                        old = requeue.popleft()
                        f = _Flight(store.start_trial(old.arch, ask_seq=None, requeued_from=old.number), old.arch)
                    else:
                        arch = searcher.ask()
                        f = _Flight(store.start_trial(arch, ask_seq=n_told), arch)
                    f.worker = pool.submit(f.number, f.arch, avoid=f.worker)
                    inflight[f.number] = f
                driver_time += time.perf_counter() - t0
                if not inflight:
                    break
                result = pool.next_result()
                t0 = time.perf_counter()
                evaluated += 1
                f = inflight.pop(result.token)
                f.worker = result.worker
                if result.evaluation is not None:
                    store.complete_trial(f.number, result.evaluation, tell_seq=n_told)
                    n_told += 1
                    searcher.tell(f.arch, result.evaluation)
                    n_complete += 1
                    done_points.append((result.evaluation.total_gflops, result.evaluation.ap))
                    if tracker is not None:
                        tracker.log_trial(
                            StoredTrial(f.number, "COMPLETE", f.arch, result.evaluation, None, n_told - 1, None, None, None)
                        )
                else:
                    f.attempts += 1
                    log.warning("trial %d attempt %d failed: %s", f.number, f.attempts, result.error)
                    if f.attempts <= settings.max_retries:
                        retry.append(f)
                    else:
                        error = result.error or "unknown error"
                        store.fail_trial(f.number, error, tell_seq=n_told)
                        n_told += 1
                        searcher.tell(f.arch, None)
                        n_failed += 1
                        if tracker is not None:
                            tracker.log_trial(StoredTrial(f.number, "FAIL", f.arch, None, None, n_told - 1, None, "failed", error))
                        if n_failed > max_failures:
                            raise NasplatError(
                                f"{n_failed} trials failed for good (more than {max_failures}); last error: {error}",
                                key="search",
                            )
                driver_time += time.perf_counter() - t0
                report()
            else:  # pragma: no cover - the bound covers every retry and failure
                raise NasplatError("the search loop exceeded its step bound", key="search")
        finally:
            if own_pool and pool is not None:
                pool.close()
            if tracker is not None:
                tracker.flush()
    trials = store.trials()
    finished = n_complete >= settings.n_trials
    if finished:
        states.update(settings.experiment, phase="searched")
    states.dispose()
    if tracker is not None:
        tracker.finish(trials, settings.budget_gflops, finished)
    return summarize(
        store,
        trials,
        driver_seconds=driver_time,
        wall_seconds=time.perf_counter() - wall_start,
        evaluated=evaluated,
    )
