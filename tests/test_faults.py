"""Faults of the machine (a full disk, memory run out) are told apart from bugs, however Ray
wrapped them, and reach the user as one line naming the cause and the path."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from nasplat.faults import causes, machine_fault


def test_a_full_disk_names_its_path_through_chains():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/out/checkpoints/epoch_3.pt")
        except OSError as inner:
            raise RuntimeError("Training failed due to worker errors:") from inner
    except RuntimeError as e:
        outer = e
    assert machine_fault(outer) == "/data/out/checkpoints/epoch_3.pt: no space left on the device"


def test_faults_known_only_by_their_text():
    class WorkerGroupError(RuntimeError):  # Ray Train's wrapper keeps the failures per rank
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors:")
            self.worker_failures = failures

    text_only = RuntimeError("[Errno 28] No space left on device: '/scratch/ray/run/checkpoint_000002/model.pt'")
    assert machine_fault(WorkerGroupError({1: ValueError("x"), 0: text_only})) == (
        "/scratch/ray/run/checkpoint_000002/model.pt: no space left on the device")
    sqlite = RuntimeError("(sqlite3.OperationalError) database or disk is full")
    assert machine_fault(sqlite) == "no space left on the device"
    oom = RuntimeError("Caught unexpected exception: 1 worker(s) were killed due to the node running low on memory")
    assert "ran low on memory" in machine_fault(oom)
    assert machine_fault(ValueError("shapes do not match")) is None
    loop = RuntimeError("a")
    loop.__context__ = loop  # a cycle ends
    assert list(causes(loop)) == [loop]


def test_the_cli_says_a_full_disk_in_one_line(tmp_path):
    """A command that fails on a full disk inside a library's wrapper: one line, exit 2, not
    'internal error' with the cause only in a log."""
    code = ("import errno, sys, typer\n"
            "from nasplat.cli import main as m\n"
            "def boom():\n"
            "    raise RuntimeError('Training failed') from OSError(errno.ENOSPC, 'No space left on device', '/x/y.pt')\n"
            "try:\n"
            "    m._guard(boom)()\n"
            "except typer.Exit as e:\n"
            "    sys.exit(e.exit_code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "nasplat: error: /x/y.pt: no space left on the device; what was saved is kept, and the same command resumes"]


def _fill_the_disk(config: dict) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), config["path"])


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_full_disk_on_a_ray_train_worker_is_found_through_rays_wrappers(tmp_path):
    from tests.conftest import fit_torch_trainer

    with pytest.raises(Exception) as info:
        fit_torch_trainer(_fill_the_disk, {"path": "/data/ckpt/epoch_2.pt"}, tmp_path / "ray")
    assert machine_fault(info.value) == "/data/ckpt/epoch_2.pt: no space left on the device"
