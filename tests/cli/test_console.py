"""What `nasplat run` shows: its own lines and a closing summary; Ray's and MLflow's start-up
chatter goes to the log file (and to the console only with --verbose)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_run_console_is_nasplats_own_and_ends_with_a_summary(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "quiet")
    path.write_text(path.read_text() + "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic, "
                    "num_evaluators: 1}\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), NASPLAT_LOG_DIR=str(tmp_path / "logs"))
    env.pop("NASPLAT_VERBOSE", None)
    res = subprocess.run([sys.executable, "-m", "nasplat", "run", str(path)], env=env, capture_output=True, text=True,
                         timeout=800)
    assert res.returncode == 0, res.stderr[-3000:]
    console = res.stdout + res.stderr
    for chatter in ("INFO", "Token authentication", "mlflow.store", "core_worker", "TrainController"):
        assert chatter not in console, (chatter, console[-3000:])
    tail = console.strip().splitlines()[-12:]
    assert any("Pareto front of study tiny" in line for line in tail)
    assert any("chosen" in line for line in tail)
    assert any(line.startswith("browse:  nasplat ui") for line in tail)
    log = (tmp_path / "logs" / "nasplat.log").read_text()
    assert "mlflow" in log and "ray" in log  # the chatter was kept, in the log file
