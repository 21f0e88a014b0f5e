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
from functools import lru_cache
from pathlib import Path

import pytest

import nasplat

ROOT = Path(__file__).resolve().parents[1]

CORE = ("errors", "faults", "files", "logs", "storage", "interrupt", "space", "nn", "models", "flops", "latency", "data", "metrics", "search", "config", "tasks")
# A task's own package (`nasplat.tasks.<name>`, room "task") may use the training and subnet layers
# and is imported by name when asked for (`nasplat.tasks.registry`); like the core, it loads no
# side-effect package. `nasplat.tasks` itself (the contract and the registry) is core.
TASK_PACKAGE = "task"
# Third-party packages with side effects (clusters, tracking servers, databases, the terminal).
SIDE_EFFECTS = ("ray", "mlflow", "sqlalchemy", "rich", "typer")
OPTUNA_RDB = "optuna.storages._rdb.models"  # Optuna's SQLAlchemy tables: the RDB storage proper

# For each layer, the nasplat rooms it must never load (the layers above it).
ABOVE = {
    **{room: ("train", "subnet", TASK_PACKAGE, "orchestration", "store", "tracking", "cli") for room in CORE},
    TASK_PACKAGE: ("orchestration", "store", "tracking", "cli"),
    "train": ("subnet", "orchestration", "store", "tracking", "cli"),
    "subnet": ("orchestration", "store", "tracking", "cli"),
    "store": ("train", "subnet", "orchestration", "tracking", "cli"),
    "tracking": ("train", "subnet", "orchestration", "cli"),
    "orchestration": ("cli",),
}

# One interpreter imports what every layer may use (torch and numpy: most of the start-up time),
# then forks a child per module: the child imports the module alone and reports what it loaded.
# The core's modules are probed first, with nothing the rule forbids them imported before the fork
# (checked); then the interpreter also imports the third-party packages the upper layers may use
# (Ray, MLflow, ...: none of them loads nasplat), and probes the upper layers' modules, whose rule
# is about nasplat rooms only. A child's nasplat modules are those its module pulls in, as in a
# fresh interpreter.
_PROBE = """
import importlib, json, os, sys
import numpy, torch
running = {}
def reap():
    pid, status = os.wait()
    module = running.pop(pid)
    if status != 0:
        print(json.dumps({"failed": module}), flush=True)
def probe(module):
    while len(running) >= 2:
        reap()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(module)
            data = json.dumps({"module": module, "loaded": sorted(sys.modules)}).encode()
        except BaseException as e:
            data = json.dumps({"module": module, "error": repr(e)}).encode()
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(w)
    running[pid] = module
    with os.fdopen(r, "rb") as f:
        print(f.read().decode(), flush=True)
core, upper = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({"preloaded": sorted(sys.modules)}), flush=True)
for module in core:
    probe(module)
while running:
    reap()
import mlflow, optuna, ray, rich, sqlalchemy, typer
for module in upper:
    probe(module)
while running:
    reap()
"""


def _modules() -> list[str]:
    out = []
    for info in pkgutil.walk_packages(nasplat.__path__, prefix="nasplat."):
        if info.name.endswith("__main__"):
            continue
        out.append(info.name)
    return sorted(out)


def _room(module: str) -> str:
    parts = module.split(".")
    if parts[1] == "tasks" and len(parts) > 2 and parts[2] not in ("base", "registry"):
        return TASK_PACKAGE
    return parts[1]


def _side_effect_free(room: str) -> bool:
    return room in CORE or room == TASK_PACKAGE


@lru_cache(maxsize=None)
def _loaded_by_all() -> dict[str, tuple[str, ...]]:
    """module -> every module loaded by importing it alone (in a child forked from one
    interpreter, see `_PROBE`)."""
    checked = [m for m in _modules() if _room(m) in ABOVE]
    core = [m for m in checked if _side_effect_free(_room(m))]
    upper = [m for m in checked if not _side_effect_free(_room(m))]
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(core), json.dumps(upper)], capture_output=True,
                         text=True, cwd=ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    preloaded = rows[0]["preloaded"]
    assert not [m for m in preloaded if m.startswith("nasplat") or m.split(".")[0] in SIDE_EFFECTS or m == OPTUNA_RDB]
    errors = [r for r in rows[1:] if "error" in r or "failed" in r]
    assert not errors, f"importing failed: {errors}"
    found = {r["module"]: tuple(r["loaded"]) for r in rows[1:]}
    assert sorted(found) == checked
    return found


def _violations(module: str, loaded: tuple[str, ...]) -> list[str]:
    room = _room(module)
    bad = [m for m in loaded if m.startswith("nasplat.") and _room(m) in ABOVE[room]]
    if _side_effect_free(room):
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
