"""The ask/tell contract, run over every registered searcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasplat.errors import BudgetError
from nasplat.config import EvolutionConfig
from nasplat.search import SEARCHERS, AnalyticObjective, build_searcher, total_gflops_fn
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"
SMALL_EVOLUTION = EvolutionConfig(population=8, top_k=3, mutations=4, crossovers=4, mutation_prob=0.2)


@pytest.fixture(scope="module")
def space():  # noqa: ANN201
    return load_space(SPACE)


def _run(space, name: str, seed: int, n: int, budget: float | None):  # noqa: ANN001, ANN202
    cost = total_gflops_fn(space)
    searcher = build_searcher(name, space, cost, budget, seed, evolution=SMALL_EVOLUTION)
    objective = AnalyticObjective(space)
    archs = []
    for _ in range(n):
        arch = searcher.ask()
        searcher.tell(arch, objective.evaluate(arch))
        archs.append(arch)
    return archs, cost


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_budget_respected_and_no_duplicates(space, name: str) -> None:
    budget = 0.06
    archs, cost = _run(space, name, seed=3, n=40, budget=budget)
    assert all(cost(a) <= budget for a in archs)
    assert len({a.key() for a in archs}) == len(archs)
    for a in archs:
        space.validate(a)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_deterministic_for_a_seed(space, name: str) -> None:
    a, _ = _run(space, name, seed=7, n=25, budget=0.1)
    b, _ = _run(space, name, seed=7, n=25, budget=0.1)
    c, _ = _run(space, name, seed=8, n=25, budget=0.1)
    assert [x.key() for x in a] == [x.key() for x in b]
    assert [x.key() for x in a] != [x.key() for x in c]


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_budget_below_smallest_arch_rejected(space, name: str) -> None:
    cost = total_gflops_fn(space)
    floor = cost(space.min_arch())
    with pytest.raises(BudgetError, match="below the smallest arch"):
        build_searcher(name, space, cost, floor * 0.99, 0, evolution=SMALL_EVOLUTION)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_unmeetable_budget_fails_after_bounded_tries(space, name: str) -> None:
    cost = total_gflops_fn(space)
    # only the smallest arch (and very few others) fit: sampling must give up, not loop forever
    budget = cost(space.min_arch())
    searcher = build_searcher(name, space, cost, budget, 0, evolution=SMALL_EVOLUTION, max_tries=50)
    with pytest.raises(BudgetError, match="after 50 proposals"):
        for _ in range(5):
            arch = searcher.ask()
            searcher.tell(arch, AnalyticObjective(space).evaluate(arch))


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_outstanding_asks_and_failures(space, name: str) -> None:
    """Several asks in flight, results told out of order, failures told as None."""
    cost = total_gflops_fn(space)
    searcher = build_searcher(name, space, cost, 0.1, 1, evolution=SMALL_EVOLUTION)
    objective = AnalyticObjective(space)
    seen = set()
    for _ in range(6):
        batch = [searcher.ask() for _ in range(3)]
        for i, arch in enumerate(reversed(batch)):
            assert arch.key() not in seen
            seen.add(arch.key())
            searcher.tell(arch, None if i == 0 else objective.evaluate(arch))


def test_model_based_searchers_beat_random_on_best_ap(space) -> None:
    """Evolution and TPE find better archs than random under the same budget (same seeds)."""
    best = {}
    for name in ("random", "evolution", "tpe"):
        scores = []
        for seed in range(2):
            archs, _ = _run(space, name, seed=seed, n=60, budget=0.06)
            scores.append(max(AnalyticObjective(space).evaluate(a).ap for a in archs))
        best[name] = sum(scores) / len(scores)
    assert best["evolution"] >= best["random"]
    assert best["tpe"] >= best["random"]
