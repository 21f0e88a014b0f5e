"""Evaluator pools: where objectives run.

`RayEvaluatorPool` keeps one Ray actor per evaluator slot (one per GPU, or per CPU slot); each
actor builds its objective once (the real one loads the supernet and caches crops) and then
evaluates archs one at a time. `LocalEvaluatorPool` evaluates in the driver process, one at a time
(tests, debugging, and machines without Ray).

The driver submits work only to idle slots and collects results one by one
(`next_result`, a `ray.wait` on every running evaluation), so every slot is kept busy.

An evaluation that runs longer than the `timeout_s` given to `next_result` is given up on the
Ray pool: its actor is killed and replaced, and the result says `timed_out`. The local pool
evaluates in the driver's own thread and cannot interrupt it: it has no timeout.

A failure of the machine is not a verdict on the arch: an evaluator that died (killed for memory,
its node lost) or could not build its objective (an unreadable checkpoint, a data root it cannot
reach) gives a result marked `lost`, whose `error` names the cause. The driver evaluates that arch
again instead of failing it; a pool whose evaluators keep failing ends the search with the cause
(NasplatError), and what was in flight is evaluated again by the next run.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any

from nasplat.errors import NasplatError
from nasplat.faults import machine_fault
from nasplat.search.evaluation import Evaluation
from nasplat.search.objectives import Objective, ObjectiveFactory
from nasplat.space import Arch

log = logging.getLogger(__name__)

# How long an evaluator may take to build its objective before its evaluation's timeout runs.
_STARTUP_ALLOWANCE_S = 600.0


class EvaluatorUnavailable(Exception):
    """An evaluator could not build its objective; the message (one line) names the cause."""


def _one_line(e: BaseException) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, NasplatError) else f"{type(e).__name__}: {text}"


def _death_cause(e: BaseException) -> str:
    """What killed an evaluator, as a person would say it."""
    text = str(e)
    fault = machine_fault(e)
    if fault is not None:
        return f"evaluator lost: {fault}"
    if "node" in text.lower() and ("died" in text or "dead" in text):
        return "evaluator lost with its node"
    return f"evaluator lost: {type(e).__name__}"


@dataclass(frozen=True)
class PoolResult:
    """The outcome of one evaluation: `evaluation`, or `error` (and `lost` when the machine
    failed, not the arch: the evaluator died or could not start). `worker` is the slot it ran on."""

    token: int
    worker: int
    evaluation: Evaluation | None
    error: str | None = None
    lost: bool = False
    timed_out: bool = False


class EvaluatorPool(ABC):
    """Slots that evaluate archs. `submit` only when `idle() > 0`."""

    size: int
    max_restarts: int = 0  # at most this many results are `lost` before the pool gives up

    @abstractmethod
    def idle(self) -> int:
        """Number of slots without work."""

    @abstractmethod
    def submit(self, token: int, arch: Arch, avoid: int | None = None) -> int:
        """Start evaluating `arch` on an idle slot (not `avoid` if another is idle); returns the slot."""

    @abstractmethod
    def next_result(self, timeout_s: float | None = None) -> PoolResult:
        """Block until one running evaluation finishes, or (where the pool can interrupt one)
        until one has run `timeout_s` seconds: that one is abandoned and returned `timed_out`.
        Raises NasplatError when none is running."""

    def close(self) -> None:
        """Release the evaluators."""


class LocalEvaluatorPool(EvaluatorPool):
    """One in-process slot; the objective is built on first use."""

    size = 1

    def __init__(self, factory: ObjectiveFactory) -> None:
        self._factory = factory
        self._objective: Objective | None = None
        self._queue: deque[tuple[int, Arch]] = deque()

    def idle(self) -> int:
        return self.size - len(self._queue)

    def submit(self, token: int, arch: Arch, avoid: int | None = None) -> int:
        self._queue.append((token, arch))
        return 0

    def next_result(self, timeout_s: float | None = None) -> PoolResult:
        """Evaluate the queued arch now (in this thread; `timeout_s` cannot apply). An objective
        that cannot be built raises its error: the search stops, and the arch stays queued in
        the store for the next run."""
        if not self._queue:
            raise NasplatError("no evaluation is running")
        if self._objective is None:
            self._objective = self._factory()
        token, arch = self._queue.popleft()
        try:
            return PoolResult(token, 0, self._objective.evaluate(arch))
        except Exception as e:  # noqa: BLE001 - any objective failure is a failed attempt
            return PoolResult(token, 0, None, error=f"{type(e).__name__}: {e}")


class _EvaluatorActor:
    """Ray actor body: builds the objective once, evaluates archs given as JSON. An objective
    that cannot be built is not a dead actor: each evaluation raises EvaluatorUnavailable with
    the cause, which the pool reports."""

    def __init__(self, factory: ObjectiveFactory, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self._objective: Objective | None = None
        self._setup_error = ""
        try:
            self._objective = factory()
        except Exception as e:  # noqa: BLE001 - reported with each evaluation, by the pool
            self._setup_error = _one_line(e)

    def evaluate(self, arch_json: str) -> dict[str, Any]:
        if self._objective is None:
            raise EvaluatorUnavailable(self._setup_error)
        arch_type = getattr(self._objective, "arch_type", Arch)  # `Objective.arch_type`; any object with evaluate() serves
        return self._objective.evaluate(arch_type.from_json(arch_json)).to_dict()

    def pid(self) -> int:
        import os

        return os.getpid()


class RayEvaluatorPool(EvaluatorPool):
    """`size` Ray actors, each with `cpus` CPUs (its torch thread count) and `gpus` GPUs.

    A slot whose actor dies or cannot build its objective is given a fresh actor, at most
    `max_restarts` times in all, after which the pool raises NasplatError naming the last cause."""

    def __init__(self, factory: ObjectiveFactory, size: int, cpus: int = 1, gpus: float = 0.0, max_restarts: int = 8) -> None:
        import ray

        self.size = size
        self._ray = ray
        self._cls = ray.remote(_EvaluatorActor)
        self._factory = factory
        self._cpus = cpus
        self._gpus = gpus
        self.max_restarts = max_restarts
        self._restarts_left = max_restarts
        self._last_fault = ""
        self._busy: dict[int, int] = {}  # slot -> token
        self._running: dict[Any, tuple[int, int]] = {}  # ObjectRef -> (token, slot)
        self._since: dict[Any, float] = {}  # ObjectRef -> when it was submitted (monotonic)
        # An evaluation's timeout runs from when its actor was built (the objective loads a
        # supernet and caches crops first): slot -> the actor's readiness probe / when it answered.
        self._probe: dict[int, Any] = {}
        self._ready_at: dict[int, float] = {}
        self._actors: list[Any] = []
        for slot in range(size):
            self._actors.append(self._new_actor(slot))

    def _new_actor(self, slot: int) -> Any:
        actor = self._cls.options(num_cpus=self._cpus, num_gpus=self._gpus, max_restarts=0).remote(
            self._factory, self._cpus
        )
        self._probe[slot] = actor.pid.remote()
        self._ready_at.pop(slot, None)
        return actor

    def _clock_start(self, ref: Any, now: float) -> float:
        """When `ref`'s timeout clock started: at submit, or when its actor became ready if
        later; an actor still being built counts from submit with a start-up allowance."""
        slot = self._running[ref][1]
        if slot in self._ready_at:
            return max(self._since[ref], self._ready_at[slot])
        return self._since[ref] + _STARTUP_ALLOWANCE_S

    def actor_pids(self) -> list[int]:
        """Process ids of the actors (for tests that kill one)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self._actors])]

    def idle(self) -> int:
        return self.size - len(self._busy)

    def submit(self, token: int, arch: Arch, avoid: int | None = None) -> int:
        free = [s for s in range(self.size) if s not in self._busy]
        if not free:
            raise NasplatError("no idle evaluator")
        slot = next((s for s in free if s != avoid), free[0])
        ref = self._actors[slot].evaluate.remote(arch.to_json())
        self._busy[slot] = token
        self._running[ref] = (token, slot)
        self._since[ref] = time.monotonic()
        return slot

    def next_result(self, timeout_s: float | None = None) -> PoolResult:
        ray = self._ray
        if not self._running:
            raise NasplatError("no evaluation is running")
        while True:
            now = time.monotonic()
            wait = None
            if timeout_s is not None:
                start = {r: self._clock_start(r, now) for r in self._running}
                late = [r for r in self._running if now - start[r] >= timeout_s]
                if late:
                    ref = min(late, key=start.__getitem__)
                    token, slot = self._running.pop(ref)
                    ran = now - self._since.pop(ref)
                    del self._busy[slot]
                    log.warning("evaluation on evaluator %d ran %.0f s (timeout %.0f s); replacing the evaluator",
                                slot, ran, timeout_s)
                    self._last_fault = f"an evaluation ran past its timeout of {timeout_s:.0f} s"
                    self._replace(slot)
                    return PoolResult(token, slot, None, error=f"evaluation timed out after {timeout_s:.0f} s",
                                      timed_out=True)
                wait = max(0.0, min(start.values()) + timeout_s - now)
            probes = {p: s for s, p in self._probe.items() if s in self._busy}
            ready, _ = ray.wait(list(self._running) + list(probes), num_returns=1, timeout=wait)
            if not ready:
                continue
            if ready[0] in probes:  # an actor finished building: its evaluation's clock starts now
                slot = probes[ready[0]]
                self._ready_at[slot] = time.monotonic()
                del self._probe[slot]
                continue
            break
        ref = ready[0]
        token, slot = self._running.pop(ref)
        del self._busy[slot], self._since[ref]
        try:
            data = ray.get(ref)
            return PoolResult(token, slot, Evaluation.from_dict(data))
        except ray.exceptions.RayActorError as e:
            self._last_fault = _death_cause(e)
            self._replace(slot)
            return PoolResult(token, slot, None, error=self._last_fault, lost=True)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, EvaluatorUnavailable):
                self._last_fault = f"evaluator cannot start: {cause}"
                log.warning("evaluator %d: %s", slot, self._last_fault)
                self._replace(slot)
                return PoolResult(token, slot, None, error=self._last_fault, lost=True)
            return PoolResult(token, slot, None, error=f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}")

    def _replace(self, slot: int) -> None:
        if self._restarts_left <= 0:
            cause = self._last_fault or "they keep dying or hanging"
            raise NasplatError(f"the evaluators keep failing ({cause}); no restarts left. The archs in flight are "
                               f"evaluated again when the same command runs again", key="search")
        self._restarts_left -= 1
        try:
            self._ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # noqa: BLE001 - the actor is already gone
            pass
        log.warning("evaluator %d replaced by a new one", slot)
        self._actors[slot] = self._new_actor(slot)

    def close(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001
                pass
        self._actors = []
