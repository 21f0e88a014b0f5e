"""benchmarks/bench_ablations.py on the tiny experiment: each row searches what it says (ZoomNet's
connections pinned; proportional part budgets respected), retrains its best subnet, and both
tables are printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
SEARCH = "search: {sampler: random, n_trials: 3, budget_gflops: 0.004, objective: wholebody, num_evaluators: 1}\n"
RETRAIN = "retrain: {top_k: 1, epochs: 1}\n"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_ablation_rows_search_what_they_say(tmp_path: Path, tiny_data: Path) -> None:
    path = write_tiny_experiment(tmp_path / "abl", tiny_data)
    path.write_text(path.read_text() + SEARCH + RETRAIN)
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_ablations.py"), str(path), "--local", "--out", str(out)]
    res = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=540)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Table 9 in kind" in res.stdout and "Table 10 in kind" in res.stdout and "paper:" in res.stdout
    rows = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"search", "fixed", "proportional"}
    for r in rows.values():
        assert r["gflops"]["total"] <= 0.004
        assert set(r["inherited"]) == set(r["retrained"]) == {"body", "foot", "face", "hand", "wholebody"}
    fixed = rows["fixed"]["arch"]
    assert all(fixed[f"{h}.feature_stage"] == 0 and fixed[f"{h}.roi_expansion"] == 1.0 for h in ("face", "hand"))
    budgets = rows["proportional"]["part_budgets"]
    assert set(budgets) == {"body", "face", "hand"}
    assert budgets["body"] + budgets["face"] + 2 * budgets["hand"] == pytest.approx(0.004, rel=1e-3)
    assert all(rows["proportional"]["gflops"][p] <= budgets[p] for p in budgets)
    assert rows["search"]["part_budgets"] is None and len({r["study"] for r in rows.values()}) == 3

    # the same command again reads the rows it wrote instead of running them
    again = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 rows (3 read from" in again.stdout
    assert {r["row"]: r for r in json.loads(out.read_text())["rows"]} == rows
