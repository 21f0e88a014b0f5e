"""Latency of an arch from a table: the sum of its units' entries, then a fitted linear correction.

`predicted = scale * sum(entries of units_of(arch)) + offset_ms`. The correction is fitted by
least squares on a handful of whole-network measurements taken when the table is built (the
space's min and max arch and a few random ones): `scale` absorbs what summing isolated blocks
misses or double-counts (onnxruntime fuses across block boundaries, caches stay warm between
blocks), `offset_ms` the whole network's fixed cost (one session call, input and output copies).

`fastest(space)` finds the arch with the lowest prediction (coordinate descent over the
dimensions from the min-FLOPs and the dense min-size archs; on CPUs the min-FLOPs arch, all
depthwise, is often not the fastest). Pure: no torch.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nasplat.errors import ConfigError
from nasplat.latency.table import LatencyTable
from nasplat.latency.units import Unit, body_units, head_units
from nasplat.space import Arch, SearchSpace
from nasplat.space.arch import FLAT_KEYS, HEADS, BodyArch, HeadArch

__all__ = ["LatencyPredictor", "fit_correction"]

NETS = ("body", "face", "hand")


def fit_correction(summed: Sequence[float], measured: Sequence[float]) -> tuple[float, float]:
    """(scale, offset_ms) minimising the squared error of scale * summed + offset against
    measured. One point (or all at one sum): scale 1 and the difference as offset. A negative
    offset (a network cannot cost a fixed amount less than its parts; it comes from noisy
    measurements) or a non-positive scale falls back to the least-squares scale through the
    origin, offset 0; so the offset is never negative and the scale positive, as a table requires."""
    x, y = np.asarray(summed, float), np.asarray(measured, float)
    if len(x) == 0:
        return 1.0, 0.0
    if len(x) == 1 or float(np.ptp(x)) == 0.0:
        offset = float(np.mean(y - x))
        if offset >= 0:
            return 1.0, offset
    else:
        scale, offset = np.polyfit(x, y, 1)
        if scale > 0 and offset >= 0:
            return float(scale), float(offset)
    through_origin = float(np.dot(x, y) / np.dot(x, x)) if float(np.dot(x, x)) > 0 else 0.0
    return (through_origin, 0.0) if through_origin > 0 else (1.0, 0.0)


class LatencyPredictor:
    """Predicts the latency (ms) of archs of `space` from `table`.

    Raises ConfigError when the table was profiled for another space (its fingerprint differs).
    """

    def __init__(self, table: LatencyTable, space: SearchSpace, source: str | None = None) -> None:
        if table.space_fingerprint != space.fingerprint():
            raise ConfigError(
                f"latency table was profiled for space {table.space_name!r} with other choices than "
                f"{space.name!r}; profile it again for this space", source=source, key="space.fingerprint")
        self.table = table
        self.space = space
        self.source = source
        self._bpm = space.all_blocks_per_module()
        self.parts = functools.lru_cache(maxsize=65536)(self._parts)
        self._entry = functools.lru_cache(maxsize=None)(self._lookup)
        self._body_ms = functools.lru_cache(maxsize=65536)(self._body)
        self._head_ms = functools.lru_cache(maxsize=65536)(self._head)

    def _lookup(self, unit: Unit) -> float:
        key = unit.key
        if key not in self.table.entries:
            raise ConfigError(f"latency table lacks unit {key}; profile it again for space {self.space.name!r}",
                              source=self.source, key="entries")
        return self.table.entries[key]

    def summed(self, arch: Arch) -> dict[str, float]:
        """Sum of the table's entries per net (body, face, hand), uncorrected. Raises ConfigError
        for a unit the table lacks."""
        out = {"body": self._body_ms(arch.body)}
        for i, name in enumerate(HEADS):
            head = arch.head(name)
            cin = arch.body.feature_channels(head.feature_stage)
            out[name] = self._head_ms(name, head, cin, arch.body.heatmap_size, i)
        return out

    # per net, cached: an arch's nets recur across archs far more often than whole archs do
    def _body(self, body: BodyArch) -> float:
        return sum(self._entry(u) for u in body_units(body, self._bpm[0]))

    def _head(self, name: str, head: HeadArch, cin: int, size: tuple[int, int], i: int) -> float:
        return sum(self._entry(u) for u in head_units(name, head, cin, size, self._bpm[1 + i]))

    def _parts(self, arch: Arch) -> Mapping[str, float]:
        s = self.summed(arch)
        a, b = self.table.scale, self.table.offset_ms
        parts = {net: a * s[net] for net in NETS}
        parts["offset"] = b
        parts["total"] = sum(parts[net] for net in NETS) + b
        return parts

    def __call__(self, arch: Arch) -> float:
        """Predicted milliseconds of the whole subnet."""
        return float(self.parts(arch)["total"])

    def fastest(self, space: SearchSpace | None = None) -> tuple[Arch, float]:
        """The arch with the lowest predicted latency found by coordinate descent (each dimension
        in turn set to its best choice, a dependent dimension re-chosen with its parent) from the
        min-FLOPs arch and from its dense twin, until no change helps. `space`: a pinned version
        of the table's space (`SearchSpace.pinned`) to search instead of the whole space."""
        space = space or self.space
        dims = space.dimensions
        children = {d.name: [c.name for c in dims if c.depends_on == d.name] for d in dims}
        starts = [space.min_arch()]
        dense = space.min_arch().to_flat()
        for d in dims:
            if d.depends_on is not None:
                dense[d.name] = min(space.choices_for(d.name, dense))
        starts.append(Arch.from_flat(dense))
        best_arch, best = starts[0], self(starts[0])
        for start in starts:
            arch, value = start, self(start)
            for _ in range(20):  # sweeps; each either improves or stops
                improved = False
                for d in dims:
                    if d.depends_on is not None:
                        continue
                    for candidate in self._variants(space, arch, d.name, children[d.name]):
                        v = self(candidate)
                        if v < value - 1e-12:
                            arch, value, improved = candidate, v, True
                if not improved:
                    break
            if value < best:
                best_arch, best = arch, value
        return best_arch, best

    @staticmethod
    def _variants(space: SearchSpace, arch: Arch, name: str, dependents: list[str]) -> list[Arch]:
        flat: dict[str, Any] = arch.to_flat()
        out = []
        for v in space.choices_for(name):
            trial = dict(flat)
            trial[name] = v
            options = [space.choices_for(c, trial) for c in dependents]
            combos = list(itertools.product(*options)) if dependents else [()]
            for combo in combos:
                t = dict(trial)
                t.update(zip(dependents, combo))
                out.append(Arch.from_flat({k: t[k] for k in FLAT_KEYS}))
        return out
