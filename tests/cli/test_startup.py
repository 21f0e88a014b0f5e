"""The CLI starts without the heavy stacks: `--help` of every command and the light commands
import neither torch, Ray, MLflow nor Optuna (checked with `python -X importtime`, not a clock)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nasplat.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "mlflow", "optuna")


def _commands() -> list[list[str]]:
    paths = [[]]
    for info in app.registered_commands:
        paths.append([info.name])
    for group in app.registered_groups:
        paths.append([group.name])
        paths += [[group.name, c.name] for c in group.typer_instance.registered_commands]
    return paths


def _imported(*args: str) -> set[str]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "nasplat", *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_every_command_is_covered():
    names = {" ".join(p) for p in _commands()}
    assert {"", "run", "train", "search", "status", "space show", "subnet eval"} <= names


@pytest.mark.parametrize("command", _commands(), ids=lambda p: " ".join(p) or "nasplat")
def test_help_imports_no_heavy_stack(command):
    loaded = _imported(*command, "--help")
    assert "typer" in loaded  # the probe sees imports at all
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("command", [
    ["space", "show", "search_spaces/zoomnas.yaml"],
    ["flops", "search_spaces/zoomnas.yaml", "--arch", "min"],
    ["--version"],
])
def test_light_commands_import_no_torch(command):
    loaded = _imported(*command)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
