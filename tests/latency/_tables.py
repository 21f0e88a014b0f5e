"""Latency tables for tests: entries made up from the units' sizes (no timing), stamped with this
machine so they are accepted here."""

from __future__ import annotations

import math
from typing import Any

from nasplat.latency import LatencyTable, space_units
from nasplat.latency.timing import machine
from nasplat.space import SearchSpace


def made_up_ms(unit: Any) -> float:
    """A deterministic positive 'latency' growing with every size of the unit."""
    product = 1.0
    for _, v in unit.sizes:
        for x in (v if isinstance(v, tuple) else (v,)):
            product *= 1 + x
    return 0.01 + 1e-4 * math.sqrt(product)


def synthetic_table(space: SearchSpace, *, name: str | None = None, scale: float = 1.0, offset: float = 0.0,
                    backend: str = "onnx") -> LatencyTable:
    here = machine("cpu", backend)
    if name is not None:
        here = {**here, "name": name}
    return LatencyTable(
        space_name=space.name,
        space_fingerprint=space.fingerprint(),
        settings={"backend": backend, "device": "cpu", "threads": 2, "batch": 1, "warmup": 1, "repeats": 3},
        machine=here,
        entries={u.key: made_up_ms(u) for u in space_units(space)},
        scale=scale,
        offset_ms=offset,
    )
