"""Ctrl-C and SIGTERM in any phase: one line, the phase named, and a state the same command resumes.

Ray Train and Ray Tune install their own SIGINT handlers when `fit()` runs in the main thread:
Ray Train's aborts the run and lets `fit()` return as if training had ended (and stays installed
afterwards, so a later Ctrl-C in the search killed its actors: "Can't find actor"); Tune's stops
the sweep and returns its results as if the trials had finished, which were then exported. So the
phases run those `fit()` calls in a worker thread (`run_in_thread`), where neither installs a
handler, and the main thread stays the one that receives signals: a KeyboardInterrupt (SIGINT) or
`Terminated` (SIGTERM, how Kubernetes and Slurm stop a job; installed by the CLI) ends the command
there. What each phase saved (training checkpoints, the study, Tune's sweep state, written at every
step) is what the same command resumes from.

`set_activity(name)` records what this process is doing (training, search, retrain, export) for
the CLI's line "interrupted during <activity>".

A leaf module: it imports only the standard library.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_activity: list[str] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler."""


def set_activity(name: str) -> None:
    """Record that this process is now in phase `name` (shown when it is interrupted)."""
    _activity[:] = [name]


def activity() -> str | None:
    """The phase this process is in, or None before any."""
    return _activity[0] if _activity else None


def run_in_thread(fn: Callable[[], T], name: str, *, timeout_s: float | None = None) -> T:
    """`fn()` in a daemon worker thread, its result or exception handed back; the calling (main)
    thread waits in short slices, so a signal's KeyboardInterrupt ends the wait at once (the worker
    is left to end with the process). With `timeout_s`, TimeoutError when `fn` has not finished
    by then (the worker is left too: a call that never returns must not hang the command)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=target, daemon=True, name=f"nasplat-{name}")
    worker.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while worker.is_alive():
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"{name}: no answer within {timeout_s:g} s")
        worker.join(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    if "error" in box:
        raise box["error"]
    return box["value"]


__all__ = ["Terminated", "activity", "run_in_thread", "set_activity"]
