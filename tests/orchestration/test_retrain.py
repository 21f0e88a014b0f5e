"""The retrain phase on Ray Tune: `nasplat run` trains, searches, retrains and records; a sweep
killed with SIGKILL mid-way resumes with the same command, no finished epoch (let alone a
finished trial) run again."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SEARCH = "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic, num_evaluators: 1}\n"


def _nasplat(*args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "nasplat", *args], env=env, capture_output=True, text=True, **kw)


def _iterations(sweep: Path) -> dict[str, list[int]]:
    """Trial directory -> the training iterations its result.json holds, in order."""
    out = {}
    for d in sorted(p for p in sweep.iterdir() if p.is_dir()):
        lines = (d / "result.json").read_text().splitlines() if (d / "result.json").is_file() else []
        out[d.name] = [json.loads(line)["training_iteration"] for line in lines if line.strip()]
    return out


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_run_retrains_records_and_exports(tmp_path: Path, tiny_experiment) -> None:
    path = tiny_experiment(tmp_path / "run")
    path.write_text(path.read_text() + SEARCH + "retrain: {top_k: 1, epochs: 2, concurrent_trials: 1}\n")
    res = _nasplat("run", str(path), timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3/4" in res.stderr and "AP before" in res.stderr

    status = json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])
    assert status["phase"] == "exported"
    best = status["retrain"]["best"]
    assert best["rank"] == 1 and best["epochs"] == 2 and status["retrain"]["trials"] == 1
    assert set(best["before"]) == set(best["after"]) == {"body", "foot", "face", "hand", "wholebody"}
    assert best["study_trial"] == status["best"]["trial"]  # the search's best subnet under the budget

    # the export holds the retrained weights, not the supernet's (BN statistics are recalibrated)
    from nasplat.subnet import load_exported

    out = tmp_path / "run" / "out"
    export = out / "exports" / "retrained-1"
    net = load_exported(export)
    info = json.loads((export / "retrain.json").read_text())
    assert [row["epoch"] for row in info["history"]] == [1.0, 2.0]
    sweep = Path(status["retrain"]["path"])
    (trial,) = [d for d in sweep.iterdir() if d.is_dir()]
    (ckpt,) = sorted(trial.glob("checkpoint_*"))
    retrained = torch.load(ckpt / "retrain.pt", weights_only=True)["model"]
    inherited = torch.load(out / "exports" / "best" / "model.pt", weights_only=True)
    exported = net.state_dict()
    weights = [k for k, v in retrained.items() if k.endswith(".weight") and v.dim() == 4]
    assert all(torch.equal(exported[k], retrained[k]) for k in weights)
    assert any(not torch.equal(inherited[k], retrained[k]) for k in weights)

    # MLflow: the sweep's run nested under the search run, one nested run per trial with the arch
    # choices, the learning rate and per-epoch per-part AP
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`nasplat.role` = 'retrain-trial'")
    assert len(runs) == 1
    run = runs[0]
    assert "body.resolution" in run.data.params and float(run.data.params["lr"]) == 1e-3
    history = client.get_metric_history(run.info.run_id, "wholebody_ap")
    assert sorted(m.step for m in history) == [1, 2]
    assert "face_ap" in run.data.metrics and "hand_ap_before" in run.data.metrics
    sweep_run = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert sweep_run.data.tags["nasplat.role"] == "retrain"
    assert client.get_run(sweep_run.data.tags["mlflow.parentRunId"]).data.tags["nasplat.role"] == "search"


EPOCHS = 5  # enough that the second trial cannot finish in the second between its first epoch and the kill


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_retrain_resumes_after_sigkill(tmp_path: Path, tiny_experiment) -> None:
    from nasplat.config import load_experiment
    from nasplat.orchestration.run import run_search
    from nasplat.orchestration.training import train_supernet

    path = tiny_experiment(tmp_path / "kill")
    path.write_text(path.read_text() + SEARCH + f"retrain: {{top_k: 2, epochs: {EPOCHS}, concurrent_trials: 1}}\n")
    experiment = load_experiment(path)
    threads = torch.get_num_threads()
    train_supernet(experiment, mlflow=False, evaluate=False)
    torch.set_num_threads(threads)
    run_search(experiment, local=True, track=False)

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "nasplat", "retrain", str(path), "--no-mlflow"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # a reader thread hands over every line as it is written (select on a buffered pipe can sit on
    # lines already read into Python's buffer, and the trial runs on meanwhile)
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stderr], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 400
    # Trials run one at a time: once the second subnet reports its first epoch, the first trial has
    # finished and the second is part-way through. Kill then (after Tune's loop saved its state).
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=5)
        except queue.Empty:
            line = ""
        seen.append(line)
        if "retrain subnet 2" in line and "epoch 1 " in line:
            break
        assert proc.poll() is None or not lines.empty(), "".join(seen)[-3000:]
    else:
        pytest.fail("the second trial reported no epoch in time:\n" + "".join(seen)[-3000:])
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sweep = next((tmp_path / "kill" / "out" / "retrain").glob("sweep-*"))
    before = _iterations(sweep)
    first, second = sorted(before.values(), key=len, reverse=True)
    full = list(range(1, EPOCHS + 1))
    assert first == full and second == full[:len(second)] and 1 <= len(second) < EPOCHS  # killed part-way

    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    after = _iterations(sweep)
    assert set(after) == set(before)  # no trial was started anew
    assert list(after.values()) == [full, full]  # no epoch repeated, trial 2 finished
    assert "retrain subnet 1" not in res.stderr  # the finished trial did not run again
    status = json.loads(_nasplat("status", str(path), "--json", timeout=120).stdout.strip().splitlines()[-1])
    assert status["phase"] == "retrained" and status["retrain"]["trials"] == 2
    assert sorted(s["rank"] for s in status["retrain"]["subnets"]) == [1, 2]
    assert all((tmp_path / "kill" / "out" / "exports" / f"retrained-{k}" / "model.pt").is_file() for k in (1, 2))
