"""The search driver: the only writer of the study store and of MLflow.

`open_search` is the opening step (searcher, store, replay, tracker); `SearchLoop.run` the loop.
It asks the searcher for archs, records each as a trial, keeps every evaluator busy, tells the
searcher each result as soon as it arrives, retries a failed or lost evaluation on another
evaluator under the same trial (at most `search.max_retries` times, each noted in the trial's
`failed_attempts`; then the trial is FAIL), and stops when the study has
`n_trials` COMPLETE trials. A failure of the machine (an evaluator that died or could not start:
the pool's `lost` results) is not a verdict on the arch: it is noted and evaluated again, as often
as the pool replaces evaluators; when the pool gives up, the search stops with the cause and the
trials in flight stay RUNNING, to be evaluated again by the next run (recovery, below).

With an accuracy predictor (`search.predictor`) a trial the predictor picked carries its
`Prediction` (the candidates screened out included) from the ask to the store; after each such
trial completes, the predictor's agreement with the measurements that followed its predictions
(`prediction_summary`) is stored as the study attribute `predictor` and logged.

Resume: on start the store marks trials a dead driver left RUNNING as FAIL ("killed") and their
archs are evaluated first, under new trials; the searcher is rebuilt by replaying the recorded
asks and tells in their recorded order, so a serial search continues exactly the sequence an
uninterrupted one would have produced.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import statistics
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from nasplat.config import SearchConfig
from nasplat.errors import ConfigError, NasplatError, StoreError
from nasplat.orchestration.pool import EvaluatorPool, LocalEvaluatorPool, PoolResult
from nasplat.search import LatencyCost, Searcher, build_searcher, pareto_indices, total_gflops_fn
from nasplat.metrics.ranking import trailing_agreement
from nasplat.search.cost import GflopsFn
from nasplat.search.evaluation import Prediction
from nasplat.search.objectives import ObjectiveFactory
from nasplat.space import Arch, SearchSpace
from nasplat.store import StoredTrial, StudyIdentity, StudyStore, open_study, redact_url
from nasplat.tasks import DEFAULT_TASK, get_task

log = logging.getLogger(__name__)


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

    def log_trial(self, trial: StoredTrial, started: float | None = None, ended: float | None = None) -> None: ...

    def flush(self) -> None: ...

    def finish(self, trials: list[StoredTrial], budget_gflops: float | None, finished: bool) -> object: ...


def identity_of(space: SearchSpace, search: SearchConfig, objective: str | None = None,
                latency: LatencyCost | None = None) -> StudyIdentity:
    """What a stored study must match to be resumed: the space searched (its fingerprint; with a
    `search.fix`, the pinned space's, so a changed fix is another study), the objective
    (`objective`, else `search.objective`), sampler, seed, budgets (the part budgets too), for
    evolution its settings, the predictor's settings and, for a latency search, the cost objective
    and the latency table's device fingerprint."""
    extra = json.dumps(asdict(search.evolution), sort_keys=True) if search.sampler == "evolution" else ""
    return StudyIdentity(
        space_fingerprint=space.fingerprint(),
        objective=objective or search.objective,
        sampler=search.sampler,
        seed=search.seed,
        budget_gflops=search.budget_gflops,
        sampler_settings=extra,
        budget_latency_ms=search.budget_latency_ms,
        latency_device=f"{latency.fingerprint} {latency.device}" if latency is not None and search.uses_latency else "",
        cost=search.cost,
        budget_parts=json.dumps(search.part_budgets, sort_keys=True) if search.part_budgets else "",
        predictor=json.dumps(asdict(search.predictor), sort_keys=True) if search.predictor is not None else "",
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


def summarize(store: StudyStore, trials: list[StoredTrial], **kw: float) -> SearchResult:
    done = [t for t in trials if t.state == "COMPLETE" and t.evaluation is not None]
    failed = [t for t in trials if t.outcome == "failed"]
    # the highest AP; of tied ones the cheapest, then the first: always a point of the Pareto front
    best = min(done, key=lambda t: (-t.evaluation.score, t.evaluation.total_gflops, t.number)) if done else None  # type: ignore[union-attr]
    points = [(t.evaluation.total_gflops, t.evaluation.score) for t in done]  # type: ignore[union-attr]
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



PREDICTION_WINDOW = 20  # the predictor's quality is reported over its last 20 evaluated picks


@dataclass
class PredictionLedger:
    """What the accuracy predictor did in a study: the trials it picked (each after screening),
    the candidates it passed over (predicted, never evaluated), and its evaluated picks as
    (predicted, measured) whole-body AP in the order they were measured."""

    picked: int = 0
    screened_out: int = 0
    predicted: list[float] = field(default_factory=list)
    measured: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, trials: list[StoredTrial]) -> PredictionLedger:
        """The ledger of stored trials (a requeued trial's prediction is its killed trial's)."""
        ledger = cls()
        for t in trials:
            if t.prediction is not None and t.requeued_from is None:
                ledger.pick(t.prediction)
        for t in sorted((t for t in trials if t.prediction is not None and t.evaluation is not None),
                        key=lambda t: t.tell_seq or 0):
            ledger.measure(t.prediction, t.evaluation.score)  # type: ignore[union-attr]
        return ledger

    def pick(self, prediction: Prediction) -> None:
        self.picked += 1
        self.screened_out += len(prediction.screened_out)

    def measure(self, prediction: Prediction, ap: float) -> None:
        self.predicted.append(prediction.ap)
        self.measured.append(ap)

    def summary(self, kind: str) -> dict[str, float | int | str | None]:
        """{kind, picked, screened_out, evaluated, window, kendall_tau, rmse}: the last two over
        the last `PREDICTION_WINDOW` evaluated picks (None while undefined)."""
        last = trailing_agreement(self.predicted[-PREDICTION_WINDOW:], self.measured[-PREDICTION_WINDOW:],
                                  PREDICTION_WINDOW)[-1:] or [{}]
        tau, rmse = last[0].get("kendall_tau"), last[0].get("rmse")
        return {
            "kind": kind,
            "picked": self.picked,
            "screened_out": self.screened_out,
            "evaluated": len(self.predicted),
            "window": PREDICTION_WINDOW,
            "kendall_tau": None if tau is None or math.isnan(tau) else round(tau, 4),
            "rmse": None if rmse is None else round(rmse, 5),
        }


@dataclass
class _Flight:
    number: int
    arch: Arch
    attempts: int = 0
    worker: int | None = None
    timeouts: int = 0
    lost: int = 0  # attempts that the machine failed (not counted in `attempts`)
    submitted: float = 0.0  # time.monotonic() of the current attempt's submit
    started: float = field(default_factory=time.time)  # wall clock: the trial run's start in MLflow
    prediction: Prediction | None = None  # the predictor's, when it picked this arch


# The automatic evaluation timeout (search.trial_timeout_s None): a multiple of the median
# measured evaluation, never below a floor, and generous before anything was measured.
TIMEOUT_MEDIAN_FACTOR = 10.0
TIMEOUT_FLOOR_S = 120.0
TIMEOUT_FIRST_S = 3600.0


def trial_timeout(configured: float | None, durations: list[float]) -> float:
    """The evaluation timeout in seconds: `configured`, else 10x the median of `durations` (the
    evaluations measured so far), at least 120 s, and 1 h while none is measured."""
    if configured is not None:
        return configured
    if not durations:
        return TIMEOUT_FIRST_S
    return max(TIMEOUT_FLOOR_S, TIMEOUT_MEDIAN_FACTOR * statistics.median(durations))


class SearchLoop:
    """An opened search (searcher rebuilt from the store, killed trials queued for re-evaluation)
    and the loop that takes it to `search.n_trials` COMPLETE trials: fill the idle evaluator
    slots, handle each result as it arrives (store it, tell the searcher, or retry it), finish.

    Built by `open_search`; `run(pool)` may be called once."""

    def __init__(self, space: SearchSpace, search: SearchConfig, searcher: Searcher, store: StudyStore, *,
                 progress: Callable[[ProgressUpdate], None] | None = None, tracker: TrialLogger | None = None) -> None:
        self.space, self.search, self.searcher, self.store = space, search, searcher, store
        self.progress, self.tracker = progress, tracker
        self.max_failures = search.n_trials if search.max_failures is None else search.max_failures
        self.requeue: deque[StoredTrial] = deque(store.recover())
        self.opened_with = trials = store.trials()  # the study as it was opened (after recovery)
        self.predictions = PredictionLedger.of(trials)
        self.n_told = replay(searcher, trials)
        self.done_points = [(t.evaluation.total_gflops, t.evaluation.score) for t in trials if t.evaluation is not None]
        self.n_complete = len(self.done_points)
        self.n_failed = sum(1 for t in trials if t.outcome == "failed")
        self.inflight: dict[int, _Flight] = {}
        self.retry: deque[_Flight] = deque()
        self.driver_seconds = 0.0
        self.evaluated = 0
        self.durations: list[float] = []  # seconds of each successful evaluation (the timeout's base)
        self._started = time.perf_counter()

    @property
    def finished(self) -> bool:
        return self.n_complete >= self.search.n_trials

    def _report(self) -> None:
        if self.progress is not None:
            best = max((p[1] for p in self.done_points), default=None)
            self.progress(ProgressUpdate(self.n_complete, self.search.n_trials, self.n_failed, len(self.inflight), best,
                                         len(pareto_indices(self.done_points))))

    def _next_flight(self) -> _Flight | None:
        """What an idle slot evaluates next: a retry, a killed trial's arch, or a new ask (None
        when enough trials are complete or under way)."""
        if self.retry:
            return self.retry.popleft()
        if self.n_complete + len(self.inflight) >= self.search.n_trials:
            return None
        if self.requeue:
            old = self.requeue.popleft()
            # the prediction goes along (its screened-out candidates stay with the killed trial)
            again = dataclasses.replace(old.prediction, screened_out=()) if old.prediction is not None else None
            number = self.store.start_trial(old.arch, ask_seq=None, requeued_from=old.number, prediction=again)
            return _Flight(number, old.arch, prediction=again)
        arch = self.searcher.ask()
        prediction = self.searcher.last_prediction
        if prediction is not None:
            self.predictions.pick(prediction)
        return _Flight(self.store.start_trial(arch, ask_seq=self.n_told, prediction=prediction), arch,
                       prediction=prediction)

    def fill(self, pool: EvaluatorPool) -> None:
        """Give every idle slot of `pool` work."""
        for _slot in range(pool.idle()):
            flight = self._next_flight()
            if flight is None:
                break
            flight.worker = pool.submit(flight.number, flight.arch, avoid=flight.worker)
            flight.submitted = time.monotonic()
            self.inflight[flight.number] = flight

    @property
    def timeout_s(self) -> float:
        return trial_timeout(self.search.trial_timeout_s, self.durations)

    def handle(self, result: PoolResult) -> None:
        """Store one finished evaluation and tell the searcher; a failed attempt is retried on
        another slot up to `search.max_retries` times (a timed-out one once), then the trial
        fails for good; a lost one (the machine failed) is retried without counting. Raises NasplatError when more than `max_failures` trials have failed for
        good."""
        self.evaluated += 1
        f = self.inflight.pop(result.token)
        f.worker = result.worker
        if result.evaluation is not None:
            self.durations.append(time.monotonic() - f.submitted)
            self.store.complete_trial(f.number, result.evaluation, tell_seq=self.n_told)
            self.n_told += 1
            self.searcher.tell(f.arch, result.evaluation)
            self.n_complete += 1
            self.done_points.append((result.evaluation.total_gflops, result.evaluation.score))
            if self.tracker is not None:
                self.tracker.log_trial(
                    StoredTrial(f.number, "COMPLETE", f.arch, result.evaluation, None, self.n_told - 1, None, None, None,
                                prediction=f.prediction),
                    f.started, time.time(),
                )
            if f.prediction is not None:
                self._note_prediction(f.prediction, result.evaluation.score)
            return
        if result.lost:  # the machine failed, not the arch: evaluate it again, on another evaluator
            f.lost += 1
            log.warning("trial %d: %s; evaluating it again", f.number, result.error)
            self.store.record_attempt(f.number, result.error or "evaluator lost", lost=True)
            self.retry.append(f)
            return
        f.attempts += 1
        f.timeouts += int(result.timed_out)
        log.warning("trial %d attempt %d failed: %s", f.number, f.attempts, result.error)
        if f.attempts <= self.search.max_retries and f.timeouts <= 1:
            self.store.record_attempt(f.number, result.error or "unknown error", lost=result.lost)
            self.retry.append(f)
            return
        error = result.error or "unknown error"
        if f.timeouts > 1:
            error = f"{error} (twice, on two evaluators)"
        self.store.fail_trial(f.number, error, tell_seq=self.n_told)
        self.n_told += 1
        self.searcher.tell(f.arch, None)
        self.n_failed += 1
        if self.tracker is not None:
            self.tracker.log_trial(StoredTrial(f.number, "FAIL", f.arch, None, None, self.n_told - 1, None, "failed", error),
                                   f.started, time.time())
        if self.n_failed > self.max_failures:
            raise NasplatError(f"{self.n_failed} trials failed for good (more than {self.max_failures}); last error: {error}",
                               key="search")

    def _note_prediction(self, prediction: Prediction, ap: float) -> None:
        """Store (and log) the predictor's summary after one of its picks was evaluated."""
        self.predictions.measure(prediction, ap)
        summary = self.predictions.summary(self.search.predictor.kind if self.search.predictor else "")
        self.store.set_attr("predictor", summary)
        if summary["evaluated"] % 10 == 0:  # type: ignore[operator]
            log.info("predictor: %s picks evaluated; over the last %s: Kendall tau %s, RMSE %s", summary["evaluated"],
                     PREDICTION_WINDOW, summary["kendall_tau"], summary["rmse"])

    def run(self, pool: EvaluatorPool | Callable[[], EvaluatorPool]) -> SearchResult:
        """Evaluate until the study has `n_trials` COMPLETE trials, then finish (tracker, result).
        `pool` may be a callable, called only when there is work left; a pool made that way is
        closed at the end. Raises NasplatError (too many failures, evaluators keep dying)."""
        self._report()
        if not self.finished:
            own = not isinstance(pool, EvaluatorPool)
            live = pool() if own else pool  # type: ignore[operator]
            try:
                s = self.search
                max_steps = ((s.n_trials + self.max_failures + len(self.requeue) + 1) * (s.max_retries + 1) + 1
                             + live.max_restarts + live.size)  # every lost result replaced an evaluator
                for _ in range(max_steps):
                    t0 = time.perf_counter()
                    self.fill(live)
                    self.driver_seconds += time.perf_counter() - t0
                    if not self.inflight:
                        break
                    result = live.next_result(self.timeout_s)
                    t0 = time.perf_counter()
                    self.handle(result)
                    self.driver_seconds += time.perf_counter() - t0
                    self._report()
                else:  # pragma: no cover - the bound covers every retry and failure
                    raise NasplatError("the search loop exceeded its step bound", key="search")
            finally:
                if own:
                    live.close()
                if self.tracker is not None:
                    self.tracker.flush()
        trials = self.store.trials()
        if self.tracker is not None:
            self.tracker.finish(trials, self.search.budget_gflops, self.finished)
        return summarize(self.store, trials, driver_seconds=self.driver_seconds,
                         wall_seconds=time.perf_counter() - self._started, evaluated=self.evaluated)


def _total_of(parts: GflopsFn) -> Callable[[Arch], float]:
    """arch -> total GFLOPs of `parts` (arch -> GFLOPs by part)."""
    return lambda arch: float(parts(arch)["total"])


def open_search(
    space: SearchSpace,
    search: SearchConfig,
    *,
    study: str,
    storage_url: str,
    objective: str | None = None,
    new_study: bool = False,
    study_name: str | None = None,
    progress: Callable[[ProgressUpdate], None] | None = None,
    tracker: TrialLogger | None = None,
    latency: LatencyCost | None = None,
    cost_parts: GflopsFn | None = None,
) -> SearchLoop:
    """The opening step of a search: build the searcher, open (or resume) the study `study` at
    `storage_url`, rebuild the searcher from the stored trials, start the tracker.

    `space` is the space the searcher samples (`Experiment.search_space`: with `search.fix`, a
    pinned sub-space whose archs the full space's objective evaluates unchanged).

    `objective` names the objective in the study's identity (default `search.objective`);
    `study_name` picks one stored study of the experiment (`--study`; see `open_study`).
    `latency`: the predicted latency (with `search.budget_latency_ms` as its budget and, for
    `search.cost: latency`, as the cost objective); required when the search uses latency.
    `cost_parts`: arch -> GFLOPs by part, "total" among them, as the evaluations count them (the
    task's `Task.gflops`; None: ZoomNet's `gflops_parts(space)`). The study's metric names are
    the space's task's objective and GFLOPs.
    Raises ConfigError (a latency search without `latency`) and BudgetError (budget below the
    smallest or fastest arch) before anything is stored, StoreError (store unreachable or not
    matching; the message names --new-study).
    """
    if search.uses_latency and latency is None:
        raise ConfigError("the search asks for latency (budget_latency_ms or cost: latency) but has no latency table",
                          key="search.latency_lut")
    if latency is not None:
        latency = dataclasses.replace(latency, budget_ms=search.budget_latency_ms, objective=search.cost == "latency")
    parts = None if cost_parts is None else functools.lru_cache(maxsize=65536)(cost_parts)  # asked per proposal
    cost = total_gflops_fn(space) if parts is None else _total_of(parts)
    searcher = build_searcher(search.sampler, space, cost, search.budget_gflops, search.seed, evolution=search.evolution,
                              latency=latency if search.uses_latency else None, part_budgets=search.part_budgets,
                              predictor=search.predictor, part_cost=parts)
    store = open_study(storage_url, study, identity_of(space, search, objective, latency), new_study=new_study,
                       study=study_name, space=space, metric=get_task(getattr(space, "task", DEFAULT_TASK)).objective)
    store.set_attr("n_trials", search.n_trials)
    store.set_attr("budget_gflops", search.budget_gflops)
    if search.part_budgets is not None:
        store.set_attr("budget_parts", search.part_budgets)
    if search.budget_latency_ms is not None:
        store.set_attr("budget_latency_ms", search.budget_latency_ms)
    loop = SearchLoop(space, search, searcher, store, progress=progress, tracker=tracker)
    if tracker is not None:
        tracker.start(store.study_name, {
            "sampler": search.sampler,
            "n_trials": str(search.n_trials),
            "budget_gflops": str(search.budget_gflops),
            "seed": str(search.seed),
            "objective": objective or search.objective,
            "num_evaluators": str(search.num_evaluators),
            "storage": redact_url(storage_url),
            "study": store.study_name,
            "space_fingerprint": space.fingerprint(),
            **({"fix": json.dumps(search.fix, sort_keys=True)} if search.fix else {}),
            **({"budget_parts": json.dumps(search.part_budgets, sort_keys=True)} if search.part_budgets else {}),
            **({"budget_latency_ms": str(search.budget_latency_ms), "cost": search.cost,
                "latency_device": latency.device} if latency is not None and search.uses_latency else {}),
        })
        tracker.sync(loop.opened_with)
    return loop


def drive(
    space: SearchSpace,
    search: SearchConfig,
    factory: ObjectiveFactory,
    *,
    study: str,
    storage_url: str,
    objective: str | None = None,
    new_study: bool = False,
    study_name: str | None = None,
    progress: Callable[[ProgressUpdate], None] | None = None,
    tracker: TrialLogger | None = None,
    pool: EvaluatorPool | Callable[[], EvaluatorPool] | None = None,
    latency: LatencyCost | None = None,
    cost_parts: GflopsFn | None = None,
) -> SearchResult:
    """Open the search and run it to `search.n_trials` COMPLETE trials (`open_search` then
    `SearchLoop.run`), on `pool` (default: `factory` evaluated in this process).

    Raises BudgetError, StoreError, NasplatError (see `open_search` and `SearchLoop.run`).
    """
    loop = open_search(space, search, study=study, storage_url=storage_url, objective=objective,
                       new_study=new_study, study_name=study_name, progress=progress, tracker=tracker, latency=latency,
                       cost_parts=cost_parts)
    return loop.run(pool if pool is not None else (lambda: LocalEvaluatorPool(factory)))
