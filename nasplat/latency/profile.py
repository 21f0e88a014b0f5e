"""Build a latency table: time every distinct unit of a space, then fit the correction.

`profile_space(space, settings, out)` times each unit of `space_units(space)` on the backend
(`Timer.time_many`: passes over groups of units, warm-up and repeats in each, the fastest run),
subtracts the cost of a do-nothing call, then measures `calibration` whole static subnets (the min and max arch and seeded random ones) and fits
`scale, offset_ms` (`fit_correction`). Progress is saved to `<out>.partial` every few seconds, so
an interrupted build resumes where it stopped (on the same machine and settings); the finished
table replaces it atomically.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from nasplat.errors import ConfigError
from nasplat.files import atomic_write_json, read_json
from nasplat.latency.modules import unit_module
from nasplat.latency.predictor import LatencyPredictor, fit_correction
from nasplat.latency.table import LatencyTable
from nasplat.latency.timing import Timer, TimingSettings, machine
from nasplat.latency.units import space_units
from nasplat.space import Arch, SearchSpace

__all__ = ["calibration_archs", "profile_space"]

Progress = Callable[[int, int, str], None]  # (done, total, what)
_SAVE_EVERY_S = 5.0


def calibration_archs(space: SearchSpace, n: int, seed: int = 0) -> list[Arch]:
    """The archs the correction is fitted on: min, max, then distinct seeded random ones."""
    archs = [space.min_arch(), space.max_arch()][:n]
    rng = np.random.default_rng(seed)
    seen = {a.key() for a in archs}
    for _ in range(100 * n):
        if len(archs) >= n:
            break
        a = space.sample(rng)
        if a.key() not in seen:
            seen.add(a.key())
            archs.append(a)
    return archs


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _load_partial(path: Path, header: dict) -> dict[str, float]:
    try:
        data = read_json(path, what="partial latency table")  # a regular file, bounded: never a FIFO's wait
    except ConfigError:
        return {}
    if not isinstance(data, dict) or data.get("header") != header or not isinstance(data.get("entries"), dict):
        return {}
    # an entry that is not a finite number >= 0 (a damaged file) is timed again
    return {str(k): float(v) for k, v in data["entries"].items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0}


def profile_space(
    space: SearchSpace,
    settings: TimingSettings,
    out: Path | None = None,
    *,
    calibration: int = 6,
    seed: int = 0,
    progress: Progress | None = None,
) -> LatencyTable:
    """Profile `space` with `settings`; write the table to `out` (when given) and return it.

    Raises ConfigError (CUDA or an onnxruntime provider missing)."""
    started = time.perf_counter()
    here = machine(settings.device, settings.backend)
    timer = Timer(settings)
    units = space_units(space)
    total = len(units) + calibration
    header = {"space": space.fingerprint(), "settings": asdict(settings), "machine": here}
    partial = _partial_path(out) if out is not None else None
    entries = _load_partial(partial, header) if partial is not None else {}
    overhead = timer.call_overhead()
    last_save = time.perf_counter()
    todo = [u for u in units if u.key not in entries]
    done = len(units) - len(todo)
    timed = timer.time_many(unit_module(u, settings.batch) for u in todo)
    for unit, ms in zip(todo, timed):
        entries[unit.key] = max(0.0, ms - overhead)
        done += 1
        if partial is not None and time.perf_counter() - last_save > _SAVE_EVERY_S:
            atomic_write_json({"header": header, "entries": entries}, partial, indent=None)
            last_save = time.perf_counter()
        if progress is not None:
            progress(done, total, unit.key)
    table = LatencyTable(
        space_name=space.name,
        space_fingerprint=space.fingerprint(),
        settings=asdict(settings),
        machine=here,
        entries=entries,
        call_overhead_ms=overhead,
    )
    predictor = LatencyPredictor(table, space)
    fit = []
    bpm = space.all_blocks_per_module()
    archs = calibration_archs(space, calibration, seed)
    for j, (arch, measured) in enumerate(zip(archs, timer.time_archs(archs, bpm))):
        summed = sum(predictor.summed(arch).values())
        fit.append({"arch": arch.to_flat(), "summed_ms": summed, "measured_ms": measured})
        if progress is not None:
            progress(len(units) + j + 1, total, "whole subnet")
    scale, offset = fit_correction([f["summed_ms"] for f in fit], [f["measured_ms"] for f in fit])
    table = replace(table.with_correction(scale, offset, tuple(fit)), build_seconds=time.perf_counter() - started)
    if out is not None:
        table.save(out)
        if partial is not None:
            partial.unlink(missing_ok=True)
    return table
