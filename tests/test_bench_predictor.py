"""benchmarks/bench_predictor.py: on the tiny experiment (its supernet trained by the script, or the
analytic objective), both samplers run each seed plain and with the predictor, every hypervolume is
recorded and printed with the goals and the predictor's quality, and a rerun evaluates nothing its
cache holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_benchmark, write_tiny_experiment

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ("search: {sampler: random, budget_gflops: 0.004, predictor: {warmup: 3, screen: 4},\n"
          "         evolution: {population: 4, top_k: 2, mutations: 2, crossovers: 2}}\n")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_predictor")


def test_evals_to_reach_is_the_first_evaluation_at_the_target(bench: ModuleType) -> None:
    assert bench.evals_to_reach([0.1, 0.2, 0.2, 0.3], 0.2) == 2
    assert bench.evals_to_reach([0.1, 0.2, 0.3], 0.1) == 1
    assert bench.evals_to_reach([0.1, 0.2], 0.25) is None
    assert bench.evals_to_reach([], 0.0) is None


def test_compare_judges_both_goals_per_seed(bench: ModuleType) -> None:
    def run(seed: int, mode: str, trajectory: list[float]) -> dict:
        return {"sampler": "random", "seed": seed, "mode": mode, "trajectory": trajectory}

    plain = {0: [1.0, 2.0, 3.0, 4.0], 1: [1.0, 2.0, 3.0, 5.0]}
    # seed 0 reaches its plain final (4) after 2 evaluations, seed 1 (5) never; at 4 evaluations
    # seed 1 is 0.9 below its plain run, more than the spread of the plain runs there (sd 0.707)
    predictor = {0: [1.0, 4.0, 4.0, 4.5], 1: [1.0, 2.0, 3.0, 4.1]}
    runs = [run(s, "plain", t) for s, t in plain.items()] + [run(s, "predictor", t) for s, t in predictor.items()]
    c = bench.compare(runs, "random", [0, 1], [2, 4])
    assert c["reach"] == {0: 2, 1: None}
    assert c["median_reach"] is None and not c["goal1"]  # the median of 2 and never is never
    assert [r["worse_seeds"] for r in c["checkpoints"]] == [[], [1]] and not c["goal2"]
    assert c["checkpoints"][1]["spread"] == pytest.approx(0.5**0.5)

    predictor[1] = [1.0, 5.0, 5.0, 5.0]
    runs = [run(s, "plain", t) for s, t in plain.items()] + [run(s, "predictor", t) for s, t in predictor.items()]
    c = bench.compare(runs, "random", [0, 1], [2, 4])
    assert c["reach"] == {0: 2, 1: 2} and c["median_reach"] == 2 and c["goal1"] and c["goal2"]  # 2 <= 4 / 2

    zero = [run(s, m, [0.0] * 4) for s in (0, 1) for m in ("plain", "predictor")]
    c = bench.compare(zero, "random", [0, 1], [2, 4])
    assert c["reach"] == {0: 1, 1: 1} and c["goal1"] is None and c["goal2"]  # nothing above AP 0: not judged


def _bench(path: Path, *extra: str, timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_predictor.py"), str(path), "--seeds", "0", "1",
           "--evals", "5", "10", "--fit", "4", "--threads", "1", *extra]
    res = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _check_runs(data: dict) -> dict:
    """Both modes of both samplers and seeds, each with a nondecreasing hypervolume; the runs by
    (sampler, seed, mode)."""
    runs = {(r["sampler"], r["seed"], r["mode"]): r for r in data["runs"]}
    assert set(runs) == {(sampler, seed, mode) for sampler in ("random", "evolution") for seed in (0, 1)
                         for mode in ("plain", "predictor")}
    for r in runs.values():
        assert len(r["trajectory"]) == 10 and r["hv"] == [r["trajectory"][4], r["trajectory"][9]]
        assert all(0 <= a <= b for a, b in zip(r["trajectory"], r["trajectory"][1:]))
    for seed in (0, 1):  # the same seed: the same archs until the predictor's warmup (3) is over
        assert runs["random", seed, "plain"]["trajectory"][:3] == runs["random", seed, "predictor"]["trajectory"][:3]
    return runs


@pytest.mark.timeout(300)
def test_real_evaluations_are_measured_and_cached(tmp_path: Path, tiny_data: Path) -> None:
    path = write_tiny_experiment(tmp_path / "pred", tiny_data)
    path.write_text(path.read_text() + SEARCH)
    out, cache = tmp_path / "bench.json", tmp_path / "cache.json"
    args = ("--cache", str(cache), "--out", str(out))
    res = _bench(path, *args, timeout=240)  # trains the tiny supernet first
    for heading in ("random: hypervolume of", "evolution: hypervolume of", "goal 1 (random)", "goal 2 (evolution)",
                    "predictor quality:", "Kendall tau"):
        assert heading in res.stdout, heading
    assert (tmp_path / "pred" / "out" / "checkpoints").is_dir()
    data = json.loads(out.read_text())
    assert data["identity"]["objective"] == "wholebody" and data["identity"]["supernet"]
    assert data["evals"] == [5, 10] and data["predictor"]["warmup"] == 3 and data["predictor"]["screen"] == 4
    _check_runs(data)  # the tiny supernet's AP is 0 on every arch: no hypervolume above 0 to ask for
    counts = data["evaluations"]
    assert counts["asked"] == 80 and 0 < counts["evaluated"] == counts["in_cache"] < 80  # runs share archs
    assert f"{counts['evaluated']} evaluated now" in res.stdout

    # the same command again reads every evaluation from the cache and measures the same
    again = _bench(path, *args, timeout=120)
    assert "80 evaluations asked: 0 evaluated now, 80 read from the cache" in again.stdout
    assert [r["trajectory"] for r in json.loads(out.read_text())["runs"]] == [r["trajectory"] for r in data["runs"]]


@pytest.mark.timeout(120)
def test_analytic_dry_run_trains_nothing(tmp_path: Path, tiny_data: Path) -> None:
    path = write_tiny_experiment(tmp_path / "dry", tiny_data)
    path.write_text(path.read_text() + SEARCH)
    out = tmp_path / "bench.json"
    res = _bench(path, "--analytic", "--out", str(out), timeout=100)
    assert "goal 1 (evolution): median" in res.stdout and "not judged" not in res.stdout
    data = json.loads(out.read_text())
    assert data["identity"]["objective"] == "analytic"
    runs = _check_runs(data)
    assert all(r["hv"][0] > 0 for r in runs.values())
    assert {q["kind"] for q in data["quality"]} == {"mlp_ensemble", "gp"}
    assert (tmp_path / "dry" / "out" / "bench_predictor_cache_analytic.json").is_file()  # the default cache
    assert not (tmp_path / "dry" / "out" / "checkpoints").exists()
