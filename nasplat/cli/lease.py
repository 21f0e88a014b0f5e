"""The experiment's lease for the rest of a command (`nasplat.store.lease`): `run`, `train`,
`search` and `retrain` take it after their preflight and before they write anything; a second
driver of the same experiment stops there with one line and exit 2. It is released when the
command ends, however it ends: `cli.main`'s guard calls `release_all` after every command.

A server lease can be lost while the command runs (this driver stalled past the grace period and
another took over): the lease's heartbeat thread then sends the main thread SIGTERM (a real signal
wakes whatever it blocks in, and the guard's handler is installed whatever the parent ignored),
and the guard prints `lost_message()` instead of "terminated" (exit 2), so that only one driver
goes on writing."""

from __future__ import annotations

import signal
import threading
from typing import Any

_held: list[Any] = []
_lost: list[str] = []
_experiments: list[Any] = []  # the experiments whose leases this command took
NOTE_TIMEOUT_S = 5.0  # a stopped command waits at most this long to note it in the store


def hold_lease(experiment: Any) -> Any:
    """Take `experiment`'s lease until the command ends; returns the `ExperimentLease` (its
    `lost` event is set if another driver takes it over). Raises StoreError naming the live
    holder."""
    from nasplat.store.lease import ExperimentLease

    lease = ExperimentLease(experiment.storage_url, experiment.name, source=str(experiment.path), on_lost=stop_command)
    lease.acquire()
    _held.append(lease)
    _experiments.append(experiment)
    return lease


def note_stopped(how: str) -> None:
    """Record in each held experiment's state that this command stopped (`how`: "interrupted
    during search"), while its lease is still held; bounded by NOTE_TIMEOUT_S, and a failure only
    logged (the command is stopping anyway)."""
    import logging

    from nasplat.interrupt import run_in_thread
    from nasplat.orchestration.phases import Phases

    for experiment in _experiments:
        try:
            run_in_thread(lambda e=experiment: Phases(e).note_stopped(how), "note-stopped", timeout_s=NOTE_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - the store is unreachable or slow: the line says it all
            logging.getLogger(__name__).warning("could not note in the study store that the command stopped (%s)", e)


def stop_command(lease: Any) -> None:
    """A held lease was taken over: stop this command (SIGTERM to the main thread, which the
    guard reports as `lost_message()`)."""
    _lost.append(lease.lost_message())
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # type: ignore[arg-type]


def lost_message() -> str | None:
    """The line of a lease this command lost, or None."""
    return _lost[-1] if _lost else None


def release_all() -> None:
    """Release every lease this command took (the last first)."""
    while _held:
        _held.pop().release()


__all__ = ["hold_lease", "lost_message", "note_stopped", "release_all", "stop_command"]
