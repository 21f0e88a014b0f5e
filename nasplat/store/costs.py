"""What an experiment cost, per phase: wall time and worker-seconds by resource.

Each run of a phase (supernet training, search, retraining, export) adds one row to
`nasplat_phase_cost` in the experiment's study store when it ends, however it ends (finished,
failed, Ctrl-C; a SIGKILL loses that piece): its wall seconds and the seconds of the resources it
held, i.e. wall time x the CPU cores and GPUs allotted to its workers (Ray Train workers x
`cluster.cpus_per_worker`, evaluator actors x the same, one core for in-process work). A resumed
phase adds up its pieces. `phase_costs(url, experiment)` sums them; `nasplat status` prints the
sums and their total as core-hours and GPU-hours.

Worker-seconds are what was reserved, not measured utilisation: the number a cluster bills.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa

from nasplat.errors import StoreError
from nasplat.store.database import create_engine, retrying, store_error
from nasplat.store.study import _ensure_sqlite_dir, _tables

log = logging.getLogger(__name__)

_metadata = sa.MetaData()
_cost_table = sa.Table(
    "nasplat_phase_cost",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(512), index=True, nullable=False),
    sa.Column("phase", sa.String(64), nullable=False),
    sa.Column("started_at", sa.String(64), nullable=False),
    sa.Column("wall_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float, nullable=False),
    sa.Column("gpu_s", sa.Float, nullable=False),
)

PHASE_ORDER = ("training", "search", "retrain", "export")


@dataclass(frozen=True)
class PhaseCost:
    """The summed pieces of one phase."""

    phase: str
    pieces: int
    wall_s: float
    cpu_s: float
    gpu_s: float

    @property
    def core_hours(self) -> float:
        return self.cpu_s / 3600.0

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600.0

    def to_dict(self) -> dict[str, float | int | str]:
        return {"phase": self.phase, "pieces": self.pieces, "wall_s": round(self.wall_s, 3),
                "core_hours": round(self.core_hours, 6), "gpu_hours": round(self.gpu_hours, 6)}


def record_piece(url: str, experiment: str, phase: str, *, started_at: str, wall_s: float, cpus: float,
                 gpus: float) -> None:
    """Add one piece of `phase` (one transaction). Raises StoreError (URL redacted)."""
    try:
        _ensure_sqlite_dir(url)
        engine = create_engine(url)

        def insert(_: int) -> None:
            _metadata.create_all(engine)
            with engine.begin() as conn:
                conn.execute(_cost_table.insert().values(experiment=experiment, phase=phase, started_at=started_at,
                                                         wall_s=wall_s, cpu_s=wall_s * cpus, gpu_s=wall_s * gpus))

        try:
            retrying(url, insert)
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001 - any driver error becomes one redacted StoreError
        raise store_error(url, "cannot record the phase's cost", e) from None


def phase_costs(url: str, experiment: str) -> list[PhaseCost]:
    """The summed cost of every phase that ran, in phase order. Read-only. Raises StoreError."""
    if _cost_table.name not in _tables(url):
        return []
    try:
        engine = create_engine(url)
        c = _cost_table.c
        query = (sa.select(c.phase, sa.func.count(), sa.func.sum(c.wall_s), sa.func.sum(c.cpu_s), sa.func.sum(c.gpu_s))
                 .where(c.experiment == experiment).group_by(c.phase))

        def read(_: int) -> list[sa.Row]:
            with engine.connect() as conn:
                return list(conn.execute(query).all())

        try:
            rows = retrying(url, read)
        finally:
            engine.dispose()
    except Exception as e:  # noqa: BLE001
        raise store_error(url, "cannot read the phase costs", e) from None
    order = {p: i for i, p in enumerate(PHASE_ORDER)}
    costs = [PhaseCost(p, int(n), float(w), float(cpu), float(gpu)) for p, n, w, cpu, gpu in rows]
    return sorted(costs, key=lambda pc: (order.get(pc.phase, len(order)), pc.phase))


def total(costs: list[PhaseCost]) -> PhaseCost:
    return PhaseCost("total", sum(c.pieces for c in costs), sum(c.wall_s for c in costs), sum(c.cpu_s for c in costs),
                     sum(c.gpu_s for c in costs))


@contextmanager
def phase_cost(url: str, experiment: str, phase: str, *, cpus: float, gpus: float = 0.0) -> Iterator[None]:
    """Time the block as one piece of `phase` holding `cpus` cores and `gpus` GPUs, and record it
    when the block ends, however it ends."""
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    failed = True
    try:
        yield
        failed = False
    finally:
        try:
            record_piece(url, experiment, phase, started_at=started_at, wall_s=time.monotonic() - t0, cpus=cpus,
                         gpus=gpus)
        except StoreError as e:
            if not failed:
                raise
            log.warning("%s", e)  # the block's own error is the one to report


__all__ = ["PHASE_ORDER", "PhaseCost", "phase_cost", "phase_costs", "record_piece", "total"]
