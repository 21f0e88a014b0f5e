"""The training log stays one history: training resumed from a checkpoint older than the last
logged epoch (stopped between an epoch's record and Ray registering its checkpoint) replaces the
records of the work it does again instead of logging that epoch twice."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from nasplat.orchestration.training import TrainingMonitor


def _event(kind: str, epoch: int, step: int) -> dict:
    return {"event": kind, "epoch": epoch, "step": step, "losses": {"total": 1.0}, "samples_per_s": 1.0, "lr": 0.1}


def _log(path: Path) -> list[tuple[str, int, int]]:
    return [(r["event"], r["epoch"], r["step"]) for r in map(json.loads, path.read_text().splitlines())]


def test_a_resume_behind_the_log_replaces_the_records_it_redoes(tmp_path: Path) -> None:
    experiment = SimpleNamespace(trainer=SimpleNamespace(log_every_steps=2), output_dir=tmp_path)
    monitor = TrainingMonitor(experiment, mlflow=False)  # 2 epochs of 3 steps, a record every 2 steps
    for step in range(1, 7):
        monitor(_event("step", (step - 1) // 3, step))
        if step % 3 == 0:
            monitor(_event("epoch", step // 3, step))
    monitor.close()
    log = tmp_path / "train_log.jsonl"
    before = _log(log)
    assert before == [("step", 0, 2), ("epoch", 1, 3), ("step", 1, 4), ("step", 1, 6), ("epoch", 2, 6)]
    with log.open("a") as f:
        f.write('{"event": "step", "ep')  # a record cut off by the kill
    resumed = TrainingMonitor(experiment, mlflow=False)  # from the epoch-1 checkpoint (step 3)
    for step in range(4, 7):
        resumed(_event("step", 1, step))
    resumed(_event("epoch", 2, 6))
    resumed.close()
    assert _log(log) == before  # epoch 2 once
    epochs = [e for kind, e, _ in _log(log) if kind == "epoch"]
    assert epochs == sorted(set(epochs))
    again = TrainingMonitor(experiment, mlflow=False)  # resumed where the log ends: nothing dropped
    again(_event("step", 2, 8))
    again.close()
    assert _log(log) == before + [("step", 2, 8)]
