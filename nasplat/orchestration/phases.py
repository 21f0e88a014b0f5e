"""Phase bookkeeping: what an experiment has done, kept in its study store.

An experiment moves through training -> trained -> searching -> searched -> (retraining ->
retrained, when it has a `retrain:` section) -> exported. Every command that runs a phase
(`nasplat run`, `nasplat train`, `nasplat search`, `nasplat retrain`) records it through
`Phases`, so `nasplat status` reads the same state after any of them. A phase is marked running
when it starts and done only when it finishes: a crash or Ctrl-C leaves it "running", which is
where the next run resumes; a command stopped by a signal notes it (`note_stopped`) until the next
phase is marked. A command that finds its phase already done changes nothing: the
recorded phase never goes back to an earlier one for a phase that had nothing to do (`reach`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

from nasplat.config import Experiment
from nasplat.store import ExperimentState, ExperimentStateStore, store_exists


class Phase(str, Enum):
    TRAINING = "training"
    TRAINED = "trained"
    SEARCHING = "searching"
    SEARCHED = "searched"
    RETRAINING = "retraining"
    RETRAINED = "retrained"
    EXPORTED = "exported"

    @property
    def order(self) -> int:
        return list(Phase).index(self)


class Phases:
    """The phase row of one experiment in its study store (`experiment.storage_url`).

    Raises StoreError (URL redacted) when the store cannot be reached."""

    def __init__(self, experiment: Experiment) -> None:
        self.name = experiment.name
        self.url = experiment.storage_url

    @contextmanager
    def _states(self, *, read_only: bool = False) -> Iterator[ExperimentStateStore]:
        states = ExperimentStateStore(self.url, read_only=read_only)
        try:
            yield states
        finally:
            states.dispose()

    def mark(self, phase: Phase, **fields: str | None) -> ExperimentState:
        """Record `phase` (and e.g. `checkpoint=`) now; a note that a command stopped is cleared."""
        with self._states() as states:
            return states.update(self.name, phase=phase.value, stopped=None, **fields)

    def note_stopped(self, how: str) -> None:
        """Record that the command running the current phase stopped early (`how`: "interrupted
        during search", ...), with the time; the phase itself stays what it was (what the same
        command resumes)."""
        from datetime import datetime, timezone

        when = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._states() as states:
            states.update(self.name, stopped=f"{how} at {when}"[:256])

    def reach(self, phase: Phase) -> None:
        """Record `phase` as done unless the recorded phase is already that one or a later one
        (a command that found its phase finished moves nothing back)."""
        current = self.current()
        known = {p.value: p for p in Phase}
        if current is not None and current.phase in known and known[current.phase].order >= phase.order:
            return
        self.mark(phase)

    def current(self) -> ExperimentState | None:
        """The recorded state, or None before any phase ran. Read-only: a store that does not
        exist yet is not created."""
        if not store_exists(self.url):
            return None
        with self._states(read_only=True) as states:
            return states.get(self.name)


__all__ = ["Phase", "Phases"]
