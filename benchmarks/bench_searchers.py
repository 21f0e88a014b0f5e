"""Hypervolume of NSGA-II, evolution and TPE vs random at equal budgets on the analytic objective.

For each seed, every searcher runs 200 trials under the same GFLOPs budget; the hypervolume of the
(GFLOPs down, whole-body AP up) front, bounded by (budget, AP 0.3), is compared with random's.
Run: python benchmarks/bench_searchers.py [--trials 200] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from nasplat.config import EvolutionConfig
from nasplat.search import AnalyticObjective, build_searcher, hypervolume, total_gflops_fn
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def run(space, name: str, seed: int, trials: int, budget: float) -> tuple[float, float, float]:  # noqa: ANN001
    cost = total_gflops_fn(space)
    searcher = build_searcher(name, space, cost, budget, seed, evolution=EvolutionConfig())
    objective = AnalyticObjective(space)
    points = []
    start = time.perf_counter()
    for _ in range(trials):
        arch = searcher.ask()
        ev = objective.evaluate(arch)
        searcher.tell(arch, ev)
        points.append((ev.total_gflops, ev.ap))
    return hypervolume(points, budget, 0.3), max(p[1] for p in points), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--space", default=str(ROOT / "search_spaces" / "zoomnas.yaml"))
    parser.add_argument("--budget", type=float, default=18.0)
    args = parser.parse_args()
    space = load_space(args.space)
    names = ("random", "evolution", "nsga2", "tpe")
    hv = {n: [] for n in names}
    best = {n: [] for n in names}
    secs = {n: 0.0 for n in names}
    for seed in range(args.seeds):
        for n in names:
            h, b, s = run(space, n, seed, args.trials, args.budget)
            hv[n].append(h)
            best[n].append(b)
            secs[n] += s
    print(f"space {space.name}, budget {args.budget} GFLOPs, {args.trials} trials, seeds 0..{args.seeds - 1}")
    for n in names:
        ratios = [h / r for h, r in zip(hv[n], hv["random"])]
        print(
            f"{n:9s} hypervolume {statistics.mean(hv[n]):.4f}  vs random {statistics.mean(ratios):.3f}x "
            f"(min {min(ratios):.3f}, max {max(ratios):.3f})  best AP {statistics.mean(best[n]):.4f}  "
            f"{1e3 * secs[n] / (args.trials * args.seeds):.1f} ms/trial searcher+objective"
        )


if __name__ == "__main__":
    main()
