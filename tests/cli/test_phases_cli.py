"""`nasplat status` reports the phase after `nasplat train` and `nasplat search` alike, and every
command decides local vs --cluster the same way."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nasplat.cli.main import app


def _status(path) -> dict:  # noqa: ANN001
    res = CliRunner().invoke(app, ["status", str(path), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_status_follows_train_then_search(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "phases")
    path.write_text(path.read_text() + "search: {sampler: random, n_trials: 3, budget_gflops: 0.05, objective: analytic}\n")
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(path), "--no-mlflow", "--no-eval"])
    assert res.exit_code == 0, res.output
    state = _status(path)
    assert state["phase"] == "trained" and state["checkpoint"].endswith("latest.pt")
    res = runner.invoke(app, ["search", str(path), "--local"])
    assert res.exit_code == 0, res.output
    state = _status(path)
    assert state["phase"] == "searched" and state["trials"] == {"COMPLETE": 3}
    # what it cost: one piece per phase, cores x wall time (one training worker, one local slot)
    phases = state["cost"]["phases"]
    assert [(p["phase"], p["pieces"]) for p in phases] == [("training", 1), ("search", 1)]
    assert all(p["core_hours"] == pytest.approx(p["wall_s"] / 3600, abs=2e-6) and p["gpu_hours"] == 0 for p in phases)
    assert state["cost"]["total"]["core_hours"] == pytest.approx(sum(p["core_hours"] for p in phases), abs=1e-5)
    res = runner.invoke(app, ["status", str(path)])
    assert "cost: training" in res.output and "core-hours" in res.output


def test_cluster_without_an_address_is_refused_by_every_command(tmp_path, tiny_experiment):
    path = tiny_experiment(tmp_path / "cluster")
    for command in ("run", "train", "search"):
        res = CliRunner().invoke(app, [command, str(path), "--cluster"])
        assert res.exit_code == 2, (command, res.output)
        assert "cluster.address" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "cluster" / "out").exists()  # refused before anything was written
