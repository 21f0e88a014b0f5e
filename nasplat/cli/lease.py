"""The experiment's lease for the rest of a command (`nasplat.store.lease`): `run`, `train`,
`search` and `retrain` take it after their preflight and before they write anything; a second
driver of the same experiment stops there with one line and exit 2. It is released when the
command ends, however it ends: `cli.main`'s guard calls `release_all` after every command."""

from __future__ import annotations

from typing import Any

_held: list[Any] = []


def hold_lease(experiment: Any) -> Any:
    """Take `experiment`'s lease until the command ends; returns the `ExperimentLease` (its
    `lost` event is set if another driver takes it over). Raises StoreError naming the live
    holder."""
    from nasplat.store.lease import ExperimentLease

    lease = ExperimentLease(experiment.storage_url, experiment.name, source=str(experiment.path))
    lease.acquire()
    _held.append(lease)
    return lease


def release_all() -> None:
    """Release every lease this command took (the last first)."""
    while _held:
        _held.pop().release()


__all__ = ["hold_lease", "release_all"]
