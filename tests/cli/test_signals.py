"""Ctrl-C and SIGTERM inside `nasplat run`, each signal in each phase (training on Ray Train and
in-process, the search on Ray actors, retraining on Ray Tune, the export): one line naming the
phase, exit 130 / 143, nothing exported from a partial phase, and the same command resumes with
no epoch repeated and no trial lost."""

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
# the real objective: each evaluation recalibrates BN and measures AP, so the search lasts seconds
SEARCH = "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: wholebody, num_evaluators: 1}\n"
RETRAIN = "retrain: {top_k: 1, epochs: 2, concurrent_trials: 1}\n"


def _run_until(cmd: list[str], ready: Callable[[str], bool], sig: int, timeout: float = 300) -> tuple[int, str]:
    """Start `cmd`, send `sig` once `ready(stderr so far)` holds, and return (exit code, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # SIGINT as a terminal would deliver it, even where this test runs as a background job (which
    # inherits SIGINT ignored, and so would the command)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


def _said(err: str, how: str, phase: str) -> bool:
    return _last_line(err) == f"nasplat: {how} during {phase}; what was saved is kept, and the same command resumes"


def _status(path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "nasplat", "status", str(path), "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _study_trials(out: Path) -> list:
    from nasplat.store import load_current_study

    store = load_current_study(f"sqlite:///{out / 'study.db'}", "tiny")
    return store.trials() if store is not None else []


def _each_phase_stopped_then_resumed(path: Path, first: int, second: int) -> None:
    """Stop `nasplat run` once in each phase (training, search, retrain, export) with the signal
    `first` or `second` in turn, checking each stop, then run it to the end and check that the
    run resumed: no training epoch twice, every trial of the study complete, none failed, the
    retrained model trained its epochs once each."""
    out = path.parent / "out"
    cmd = [sys.executable, "-m", "nasplat", "run", str(path), "--no-mlflow"]
    name = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
    code_of = {signal.SIGINT: 130, signal.SIGTERM: 143}

    # training, once a checkpoint exists (Ray Train's own SIGINT handler would have ended the run
    # as if finished and gone on to search a half-trained supernet)
    code, err = _run_until(cmd, lambda _: (out / "checkpoints" / "latest.pt").is_file(), first)
    assert code == code_of[first] and _said(err, name[first], "training"), err[-3000:]
    assert "2/4" not in err and "Traceback" not in err

    # the search, as it starts its evaluators (it used to end in "Can't find actor")
    code, err = _run_until(cmd, lambda text: "2/4" in text, second)
    assert code == code_of[second] and _said(err, name[second], "search"), err[-3000:]
    if second == signal.SIGTERM:  # the phase recorded as stopped, until the same command goes on (once is enough)
        status = _status(path)
        assert status["phase"] in ("trained", "searching") and status["stopped"].startswith(f"{name[second]} during search at ")
    assert "3/4" not in err and "Traceback" not in err
    assert not [t for t in _study_trials(out) if t.outcome == "failed"]

    # retraining, after its first epoch (Tune's handler would have returned the trial as
    # finished, and its 1-epoch model would have been exported and registered)
    code, err = _run_until(cmd, lambda text: "retrain subnet 1 lr 0.001: epoch 1 " in text, first)
    assert code == code_of[first] and _said(err, name[first], "retrain"), err[-3000:]
    assert not (out / "exports" / "retrained-1").exists() and not (out / "exports" / "best").exists()
    assert "Traceback" not in err

    # the export (it used to ignore Ctrl-C): nothing half-written counts as an export
    code, err = _run_until(cmd, lambda text: "4/4" in text, second)
    assert code == code_of[second] and _said(err, name[second], "export"), err[-3000:]
    assert not (out / "exports" / "best" / "meta.json").exists()  # written last, when whole

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    epochs = [json.loads(ln)["epoch"] for ln in (out / "train_log.jsonl").read_text().splitlines()
              if json.loads(ln)["event"] == "epoch"]
    assert len(epochs) == len(set(epochs)) and epochs[-1] == 3  # training resumed: no epoch twice
    trials = _study_trials(out)
    assert sum(t.state == "COMPLETE" for t in trials) == 3 and not [t for t in trials if t.outcome == "failed"]
    info = json.loads((out / "exports" / "retrained-1" / "retrain.json").read_text())
    assert info["epochs"] == 2 and [row["epoch"] for row in info["history"]] == [1.0, 2.0]
    assert (out / "exports" / "best" / "meta.json").is_file() and (out / "exports" / "best" / "model.onnx").is_file()
    status = _status(path)
    assert status["phase"] == "exported" and status["stopped"] is None


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_sigint_and_sigterm_alternating_over_the_phases_with_ray_train(tmp_path, tiny_experiment):
    """SIGINT in training (Ray Train, 2 workers) and retraining; SIGTERM in the search and the export."""
    path = tiny_experiment(tmp_path / "sig", num_workers=2)
    path.write_text(path.read_text() + SEARCH + RETRAIN)
    _each_phase_stopped_then_resumed(path, signal.SIGINT, signal.SIGTERM)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_sigterm_and_sigint_alternating_over_the_phases_training_in_process(tmp_path, tiny_experiment):
    """SIGTERM in training (in this process, one worker) and retraining; SIGINT in the search and
    the export."""
    path = tiny_experiment(tmp_path / "sig", num_workers=1)
    path.write_text(path.read_text() + SEARCH + RETRAIN)
    _each_phase_stopped_then_resumed(path, signal.SIGTERM, signal.SIGINT)
