"""The layering rule of docs/DESIGN.md, checked on the real import graph.

Each module is imported in a fresh interpreter and the packages it loaded are compared with what
its layer may use: the core (space, nn, models, flops, latency, data, metrics, search, config and the
leaves errors / files / logs / storage) loads none of Ray, MLflow, SQLAlchemy, Optuna's RDB storage, rich or typer;
`search/` loads neither `train/` nor `subnet/`; each layer loads only the layers below it.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pytest

import nasplat

ROOT = Path(__file__).resolve().parents[1]

CORE = ("errors", "faults", "files", "logs", "storage", "interrupt", "space", "nn", "models", "flops", "latency", "data", "metrics", "search", "config")
# Third-party packages with side effects (clusters, tracking servers, databases, the terminal).
SIDE_EFFECTS = ("ray", "mlflow", "sqlalchemy", "rich", "typer")
OPTUNA_RDB = "optuna.storages._rdb.models"  # Optuna's SQLAlchemy tables: the RDB storage proper

# For each layer, the nasplat rooms it must never load (the layers above it).
ABOVE = {
    **{room: ("train", "subnet", "orchestration", "store", "tracking", "cli") for room in CORE},
    "train": ("subnet", "orchestration", "store", "tracking", "cli"),
    "subnet": ("orchestration", "store", "tracking", "cli"),
    "store": ("train", "subnet", "orchestration", "tracking", "cli"),
    "tracking": ("train", "subnet", "orchestration", "cli"),
    "orchestration": ("cli",),
}

_PROBE = (
    "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(sys.modules)))"
)


def _modules() -> list[str]:
    out = []
    for info in pkgutil.walk_packages(nasplat.__path__, prefix="nasplat."):
        if info.name.endswith("__main__"):
            continue
        out.append(info.name)
    return sorted(out)


def _room(module: str) -> str:
    return module.split(".")[1]


@lru_cache(maxsize=None)
def _loaded_by_all() -> dict[str, tuple[str, ...]]:
    """module -> every module loaded by importing it alone (two interpreters at a time)."""

    def probe(module: str) -> tuple[str, tuple[str, ...]]:
        res = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, cwd=ROOT,
                             timeout=300)
        assert res.returncode == 0, f"importing {module} failed:\n{res.stderr[-2000:]}"
        return module, tuple(json.loads(res.stdout.strip().splitlines()[-1]))

    checked = [m for m in _modules() if _room(m) in ABOVE]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(probe, checked))


def _violations(module: str, loaded: tuple[str, ...]) -> list[str]:
    room = _room(module)
    bad = [m for m in loaded if m.startswith("nasplat.") and _room(m) in ABOVE[room]]
    if room in CORE:
        bad += [m for m in loaded if m.split(".")[0] in SIDE_EFFECTS and "." not in m]
        bad += [m for m in loaded if m == OPTUNA_RDB]
    return sorted(set(bad))


def test_every_module_is_checked():
    rooms = {_room(m) for m in _modules()}
    assert rooms - set(ABOVE) <= {"cli"}, f"a room without a layer rule: {sorted(rooms - set(ABOVE))}"


@pytest.mark.timeout(900)
def test_no_module_loads_a_layer_above_it_and_the_core_has_no_side_effect_packages():
    found = {m: _violations(m, loaded) for m, loaded in _loaded_by_all().items()}
    found = {m: v for m, v in found.items() if v}
    assert not found, "layering violations:\n" + "\n".join(f"{m}: {', '.join(v)}" for m, v in sorted(found.items()))


def test_the_rule_catches_an_upward_import():
    """The check itself: `search` loading `train` or `ray` is reported."""
    assert _violations("nasplat.search.base", ("nasplat.search.base", "nasplat.train.loop", "ray")) == [
        "nasplat.train.loop",
        "ray",
    ]
    assert _violations("nasplat.subnet.evaluator", ("nasplat.train.loop", "torch")) == []
