"""What a search cost, as MLflow metrics on the study's search run `search-<study>`.

`cost_metrics(costs)` turns the study store's summed phase costs (`nasplat.store.costs`) into
`cost.<phase>.wall_s`, `cost.<phase>.core_hours`, `cost.<phase>.gpu_hours` and the same for
`cost.total`; it is pure. `log_cost_metrics` writes them on the search run of a study, at step =
the number of pieces recorded so far, so each metric's latest value is the store's current total
(a resumed phase adds up its pieces in the store; MLflow only mirrors the sums).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Protocol


class _Cost(Protocol):
    phase: str
    pieces: int
    wall_s: float
    cpu_s: float
    gpu_s: float


PREFIX = "cost"
TOTAL = "total"


def cost_metrics(costs: Iterable[_Cost]) -> dict[str, float]:
    """{`cost.<phase>.wall_s` | `.core_hours` | `.gpu_hours`: value} for every phase of `costs`
    (one summed row per phase, as `store.costs.phase_costs` returns them) and their sum as
    `cost.total.*`. No rows: an empty dict (nothing ran, nothing to log)."""
    rows = list(costs)
    if not rows:
        return {}
    out: dict[str, float] = {}
    sums = {"wall_s": 0.0, "cpu_s": 0.0, "gpu_s": 0.0}
    for row in rows:
        if row.phase == TOTAL:
            raise ValueError(f"a phase may not be called {TOTAL!r}")
        out.update(_metrics_of(row.phase, row.wall_s, row.cpu_s, row.gpu_s))
        sums["wall_s"] += row.wall_s
        sums["cpu_s"] += row.cpu_s
        sums["gpu_s"] += row.gpu_s
    out.update(_metrics_of(TOTAL, sums["wall_s"], sums["cpu_s"], sums["gpu_s"]))
    return out


def _metrics_of(phase: str, wall_s: float, cpu_s: float, gpu_s: float) -> dict[str, float]:
    return {f"{PREFIX}.{phase}.wall_s": float(wall_s), f"{PREFIX}.{phase}.core_hours": cpu_s / 3600.0,
            f"{PREFIX}.{phase}.gpu_hours": gpu_s / 3600.0}


def pieces(costs: Iterable[_Cost]) -> int:
    """How many pieces the summed rows hold: the step the metrics are logged at."""
    return sum(int(c.pieces) for c in costs)


def log_cost_metrics(uri: str, experiment: str, study: str, metrics: Mapping[str, float], step: int) -> str | None:
    """Log `metrics` at `step` on the search run of `study` in MLflow experiment `experiment` at
    `uri`. Returns the run's id, None when there is no such experiment or run (the study was not
    tracked; nothing is created). Raises NasplatError (URI redacted) when the store fails."""
    from mlflow.entities import Metric

    from nasplat.tracking.client import client_for, tracking_error
    from nasplat.tracking.mlflow_tracker import ROLE, STUDY

    try:
        client = client_for(uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE}` = 'search' and tags.`{STUDY}` = '{study}'",
                                  max_results=1)
        if not runs:
            return None
        run_id = str(runs[0].info.run_id)
        if metrics:
            stamp = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items()])
        return run_id
    except Exception as e:  # noqa: BLE001 - one redacted line for any tracking-store failure
        raise tracking_error(uri, f"cannot log the phase costs to MLflow run search-{study}", e) from None


__all__ = ["PREFIX", "TOTAL", "cost_metrics", "log_cost_metrics", "pieces"]
