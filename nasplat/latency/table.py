"""The latency lookup table (LUT) file: what was measured, where, and how to correct the sum.

A table is JSON:

```
{"format": "nasplat-latency-lut", "version": 1,
 "space": {"name": "quickstart", "fingerprint": "..."},
 "settings": {"backend": "onnx", "device": "cpu", "threads": 2, "batch": 1, "warmup": 5, "repeats": 25,
              "statistic": "min"},
 "machine": {"device": "cpu", "name": "Intel(R) Xeon(R) ...", "torch": "2.13.0+cpu", "onnxruntime": "1.32.0"},
 "call_overhead_ms": 0.006,             # a do-nothing call, already subtracted from every entry
 "entries": {"basic(c=16,g=2,h=32,m=1,w=24)": 0.0412, ...},   # ms per unit (the statistic of its timed runs)
 "correction": {"scale": 1.02, "offset_ms": 0.31, "fit": [{"arch": {...}, "summed_ms": .., "measured_ms": ..}]},
 "build_seconds": 61.2}
```

The device fingerprint is the machine plus the backend, threads and batch; a table is refused
(one ConfigError line) where the machine differs: a table of one CPU says little about another.
Every entry, `call_overhead_ms`, `correction.offset_ms` and `build_seconds` must be a finite number
>= 0 (an entry of 0 is a block faster than the call overhead, which profiling clamps at 0) and
`correction.scale` a finite number > 0: a table holding a negative, NaN or infinite one (edited, or
written by a broken build) is refused naming the file and the key, not turned into "-305.8 ms".
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from nasplat.errors import ConfigError
from nasplat.files import atomic_write_json, read_json

__all__ = ["FORMAT", "LatencyTable", "load_table"]

FORMAT = "nasplat-latency-lut"
VERSION = 1
_MACHINE_KEYS = ("device", "name", "torch", "onnxruntime")
# A table has one entry per distinct block of a space: thousands, a few hundred KiB.
_MAX_TABLE_BYTES = 256 << 20


def _number(value: Any, source: str | None, key: str, *, positive: bool = False, unit: str = " ms") -> float:
    """`value` as a float when it is a finite number >= 0 (> 0 when `positive`); raises
    ConfigError naming `key` otherwise (a string or a bool is not a number here)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        allowed = f"a finite number {'>' if positive else '>='} 0" + (unit if not positive else "")
        raise ConfigError(f"value {value!r} not allowed: must be {allowed}", source=source, key=key)
    return float(value)


@dataclass(frozen=True)
class LatencyTable:
    """A loaded (or freshly profiled) latency table."""

    space_name: str
    space_fingerprint: str
    settings: Mapping[str, Any]  # backend, device, threads, batch, warmup, repeats
    machine: Mapping[str, Any]  # device, name, torch[, onnxruntime]
    entries: Mapping[str, float]  # unit key -> ms (settings.statistic of the runs), call overhead subtracted
    call_overhead_ms: float = 0.0
    scale: float = 1.0  # whole-network ms ~= scale * sum of entries + offset_ms
    offset_ms: float = 0.0
    fit: tuple[Mapping[str, Any], ...] = ()  # the whole-network measurements the correction fits
    build_seconds: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A short stable hash of the machine, backend, threads and batch."""
        text = json.dumps({"machine": dict(self.machine), "backend": self.settings["backend"],
                           "threads": self.settings["threads"], "batch": self.settings["batch"]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """One line: backend, device, threads, batch and versions."""
        s, m = self.settings, self.machine
        versions = f"torch {m.get('torch')}" + (f", onnxruntime {m['onnxruntime']}" if m.get("onnxruntime") else "")
        return (f"{s['backend']} on {m.get('device')} {m.get('name')!r}, {s['threads']} threads, batch {s['batch']} "
                f"({versions})")

    def check_machine(self, here: Mapping[str, Any], source: str | None = None) -> None:
        """Raises ConfigError (one line) when `here` (`timing.machine(...)`) is not the machine
        the table was measured on."""
        for key in _MACHINE_KEYS:
            if self.machine.get(key) != here.get(key):
                raise ConfigError(
                    f"latency table was measured on another machine ({key} {self.machine.get(key)!r}, here "
                    f"{here.get(key)!r}); profile one here with `nasplat latency profile`",
                    source=source, key=f"machine.{key}")

    def with_correction(self, scale: float, offset_ms: float, fit: tuple[Mapping[str, Any], ...]) -> LatencyTable:
        return replace(self, scale=scale, offset_ms=offset_ms, fit=fit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "space": {"name": self.space_name, "fingerprint": self.space_fingerprint},
            "settings": dict(self.settings),
            "machine": dict(self.machine),
            "fingerprint": self.fingerprint,
            "call_overhead_ms": self.call_overhead_ms,
            "entries": dict(sorted(self.entries.items())),
            "correction": {"scale": self.scale, "offset_ms": self.offset_ms, "fit": [dict(f) for f in self.fit]},
            "build_seconds": self.build_seconds,
            **({"extra": dict(self.extra)} if self.extra else {}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the table atomically."""
        return atomic_write_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> LatencyTable:
        """Raises ConfigError naming the key for anything that is not a version-1 table."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"not a nasplat latency table (format is not {FORMAT!r})", source=source, key="format")
        if data.get("version") != VERSION:
            raise ConfigError(f"latency table version {data.get('version')!r}; this nasplat reads {VERSION}",
                              source=source, key="version")
        try:
            space, settings, correction = data["space"], data["settings"], data["correction"]
            entries = {str(k): _number(v, source, f"entries.{k}") for k, v in data["entries"].items()}
            for key in ("backend", "device", "threads", "batch"):
                settings[key]
            return cls(
                space_name=str(space["name"]),
                space_fingerprint=str(space["fingerprint"]),
                settings=dict(settings),
                machine=dict(data["machine"]),
                entries=entries,
                call_overhead_ms=_number(data.get("call_overhead_ms", 0.0), source, "call_overhead_ms"),
                scale=_number(correction["scale"], source, "correction.scale", positive=True),
                offset_ms=_number(correction["offset_ms"], source, "correction.offset_ms"),
                fit=tuple(correction.get("fit", ())),
                build_seconds=_number(data.get("build_seconds", 0.0), source, "build_seconds", unit=" s"),
                extra=dict(data.get("extra", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"malformed latency table ({type(e).__name__}: {e})", source=source) from e


def load_table(path: str | Path) -> LatencyTable:
    """Read a table file. Raises ConfigError naming the file (missing, not a regular file, not JSON,
    not a table, a negative or non-finite number: see the module's docstring)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise ConfigError("latency table not found; make one with `nasplat latency profile`", source=str(p))
    data = read_json(p, what="latency table", limit=_MAX_TABLE_BYTES)
    return LatencyTable.from_dict(data, source=str(p))
