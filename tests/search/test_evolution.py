"""EvolutionSearcher's parents: the best by AP, then the Pareto front under the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasplat.config import EvolutionConfig
from nasplat.search import build_searcher, total_gflops_fn
from nasplat.search.evaluation import Evaluation
from nasplat.search.pareto import pareto_indices
from nasplat.space import load_space

SPACE = load_space(Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml")


def _evaluation(gflops: float, ap: float) -> Evaluation:
    parts = {p: {"AP": ap, "AR": ap} for p in ("body", "foot", "face", "hand", "wholebody")}
    return Evaluation(metrics=parts, gflops={"body": gflops, "face": 0.0, "hand": 0.0, "total": gflops}, params=1)


def test_parents_are_the_best_by_ap_then_the_front_by_ap() -> None:
    settings = EvolutionConfig(population=12, top_k=4, mutations=2, crossovers=2)
    searcher = build_searcher("evolution", SPACE, total_gflops_fn(SPACE), None, 0, evolution=settings)
    rng = np.random.default_rng(0)
    points = []
    for _ in range(12):
        arch = searcher.ask()
        g, a = float(rng.uniform(0.02, 0.2)), float(rng.uniform(0.3, 0.8))
        searcher.tell(arch, _evaluation(g, a))
        points.append((arch, g, a))
    parents = searcher._select_parents()
    by_ap = sorted(points, key=lambda p: -p[2])
    assert len(parents) == 4
    assert parents[:2] == [by_ap[0][0], by_ap[1][0]]  # half of top_k: mmrazor's top-k by AP
    front = {points[i][0] for i in pareto_indices([(g, a) for _, g, a in points])}
    # the other half comes from the non-dominated archs (first front first), best AP first
    expected = [p[0] for p in by_ap if p[0] in front and p[0] not in parents[:2]][:2]
    assert len(expected) == 2  # this draw has a front of at least four
    assert parents[2:] == expected
    assert len(set(a.key() for a in parents)) == len(parents)


def test_without_settings_the_evolution_searcher_uses_mmrazors_defaults() -> None:
    searcher = build_searcher("evolution", SPACE, total_gflops_fn(SPACE), None, 0)
    s = searcher.settings
    assert (s.population, s.top_k, s.mutations, s.crossovers) == (50, 10, 25, 25)
