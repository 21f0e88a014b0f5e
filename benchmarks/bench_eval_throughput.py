"""Evaluation throughput with 2 Ray evaluator actors vs 1, and the driver's overhead per trial.

Each evaluation burns ~0.5 s of single-thread torch matmuls (GIL-free, calibrated here), so two
actors on two cores should approach 2x. The driver overhead is the time the driver spends outside
waiting for evaluators (ask, store writes, tell, MLflow enqueue), per trial, compared with one
evaluation. Run: python benchmarks/bench_eval_throughput.py [--trials 12] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nasplat.config import SearchConfig
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.driver import drive
from nasplat.orchestration.pool import RayEvaluatorPool
from nasplat.search import AnalyticFactory, calibrate_work
from nasplat.space import load_space
from nasplat.tracking import MlflowTracker

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cpu_small.yaml"


def run(actors: int, trials: int, work: int, tmp: Path) -> tuple[float, float]:
    settings = SearchConfig(sampler="nsga2", n_trials=trials, budget_gflops=0.1, seed=0, objective="analytic",
                            num_evaluators=actors)
    tracker = MlflowTracker(f"sqlite:///{tmp}/mlflow{actors}.db", f"bench{actors}", tmp / f"art{actors}")
    init_ray(None, num_cpus=2)
    pool = RayEvaluatorPool(AnalyticFactory(str(SPACE), work=work), actors)
    pool.actor_pids()  # wait until the actors are up: measure evaluation, not start-up
    start = time.perf_counter()
    result = drive(load_space(SPACE), settings, AnalyticFactory(str(SPACE), work=work), study=f"bench{actors}",
                   storage_url=f"sqlite:///{tmp}/study{actors}.db", tracker=tracker, pool=pool)
    wall = time.perf_counter() - start
    pool.close()
    return result.n_complete / wall, result.driver_seconds / max(1, result.evaluated)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--delay", type=float, default=0.5)
    args = parser.parse_args()
    work = calibrate_work(args.delay)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run(1, 2, work, tmp / "warm")  # warm-up: Ray start, imports, MLflow tables
        one, over1 = run(1, args.trials, work, tmp)
        two, over2 = run(2, args.trials, work, tmp)
    print(f"evaluation ~{args.delay:.2f} s ({work} matmuls 256x256, 1 thread per actor), {args.trials} trials")
    print(f"1 actor  {one:.3f} trials/s, 2 actors {two:.3f} trials/s, speed-up {two / one:.2f}x (goal >= 1.7x)")
    print(
        f"driver overhead per trial: {over1 * 1e3:.1f} ms (1 actor), {over2 * 1e3:.1f} ms (2 actors) = "
        f"{100 * max(over1, over2) / args.delay:.1f}% of one evaluation (goal < 10%)"
    )


if __name__ == "__main__":
    main()
