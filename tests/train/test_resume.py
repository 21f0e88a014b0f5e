"""A run killed with SIGKILL at an arbitrary point and resumed ends bit-for-bit where an
uninterrupted run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch


_RUN = (
    "import sys, torch; torch.set_num_threads(1)\n"
    "from nasplat.orchestration.training import train_supernet\n"
    "from nasplat.config import load_experiment\n"
    "train_supernet(load_experiment(sys.argv[1]), mlflow=False, evaluate=False)\n"
)


def _train(experiment: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", _RUN, str(experiment)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-2000:]


@pytest.mark.timeout(400)
def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, tiny_experiment):
    straight = tiny_experiment(tmp_path / "a")
    _finish(_train(straight))

    killed = tiny_experiment(tmp_path / "b")
    ckpts = tmp_path / "b" / "out" / "checkpoints"
    proc = _train(killed)
    deadline = time.monotonic() + 200
    # Kill once step 4 (inside epoch 2 of 3) has been checkpointed; the run is then mid-step.
    while time.monotonic() < deadline and not (ckpts / "step-00000004.pt").exists():
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _finish(_train(killed))  # the same command resumes

    final = json.loads((ckpts / "final.json").read_text())
    assert final["resumed_from_step"] >= 4  # it continued, it did not start over

    a = torch.load(tmp_path / "a" / "out" / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(ckpts / "latest.pt", weights_only=True)
    assert a["step"] == b["step"] == 9
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for pid, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][pid][name]), (pid, name)
