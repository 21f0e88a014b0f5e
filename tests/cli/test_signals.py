"""Ctrl-C and SIGTERM inside `nasplat run` (Ray Train and Ray Tune phases): one line naming the
phase, exit 130 / 143, nothing exported from a partial phase, and the same command resumes."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEARCH = "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic, num_evaluators: 1}\n"


def _run_until(cmd: list[str], ready: Callable[[str], bool], sig: int, timeout: float = 300) -> tuple[int, str]:
    """Start `cmd`, send `sig` once `ready(stderr so far)` holds, and return (exit code, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while not ready("".join(seen)):
            assert proc.poll() is None or not lines.empty(), "".join(seen)[-3000:]
            assert time.monotonic() < deadline, "never ready:\n" + "".join(seen)[-3000:]
            try:
                seen.append(lines.get(timeout=0.2))
            except queue.Empty:
                pass
        proc.send_signal(sig)
        code = proc.wait(timeout=120)  # a stated time: well within it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.5)
    while not lines.empty():
        seen.append(lines.get())
    return code, "".join(seen)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigint_in_training_and_sigterm_in_retraining_end_in_one_line_and_resume(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "sig", num_workers=2)  # Ray Train, as on a cluster
    path.write_text(path.read_text() + SEARCH + "retrain: {top_k: 1, epochs: 4, concurrent_trials: 1}\n")
    out = tmp_path / "sig" / "out"
    cmd = [sys.executable, "-m", "nasplat", "run", str(path), "--no-mlflow"]

    # Ctrl-C while Ray Train trains (a checkpoint exists): Ray Train's own handler would have ended
    # the run as if finished and gone on to search a half-trained supernet
    code, err = _run_until(cmd, lambda _: (out / "checkpoints" / "latest.pt").is_file(), signal.SIGINT)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "nasplat: interrupted during training; what was saved is kept, and the same command resumes")
    assert "2/4" not in err and "Traceback" not in err

    # SIGTERM while Tune retrains: Tune's handler would have returned the trial as finished, and
    # its 1-epoch model would have been exported and registered
    code, err = _run_until(cmd, lambda text: "retrain subnet 1 lr 0.001: epoch 1 " in text, signal.SIGTERM)
    assert code == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        "nasplat: terminated during retrain; what was saved is kept, and the same command resumes")
    assert not (out / "exports" / "retrained-1").exists() and not (out / "exports" / "best").exists()
    assert "Traceback" not in err

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    epochs = [json.loads(ln)["epoch"] for ln in (out / "train_log.jsonl").read_text().splitlines()
              if json.loads(ln)["event"] == "epoch"]
    assert len(epochs) == len(set(epochs)) and epochs[-1] == 3  # training resumed: no epoch twice
    info = json.loads((out / "exports" / "retrained-1" / "retrain.json").read_text())
    assert info["epochs"] == 4 and [row["epoch"] for row in info["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert (out / "exports" / "best" / "model.onnx").is_file()
