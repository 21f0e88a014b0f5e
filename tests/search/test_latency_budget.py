"""Every searcher honours a latency budget like the GFLOPs budget (bounded rejection, never an
arch over it), refuses one below the fastest subnet, and NSGA-II can minimise latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasplat.config import EvolutionConfig
from nasplat.errors import BudgetError
from nasplat.latency import LatencyPredictor
from nasplat.search import SEARCHERS, AnalyticObjective, LatencyCost, build_searcher, total_gflops_fn
from nasplat.space import load_space
from tests.latency._tables import synthetic_table

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"
SMALL_EVOLUTION = EvolutionConfig(population=8, top_k=3, mutations=4, crossovers=4, mutation_prob=0.2)


@pytest.fixture(scope="module")
def space():  # noqa: ANN201
    return load_space(SPACE)


@pytest.fixture(scope="module")
def predictor(space):  # noqa: ANN001, ANN201
    return LatencyPredictor(synthetic_table(space), space)


def _cost(predictor, budget: float | None, objective: bool = False) -> LatencyCost:  # noqa: ANN001
    return LatencyCost(predict=predictor, budget_ms=budget, fastest_ms=predictor.fastest()[1], objective=objective)


def _median_latency(space, predictor) -> float:  # noqa: ANN001
    import numpy as np

    rng = np.random.default_rng(0)
    return float(np.median([predictor(space.sample(rng)) for _ in range(200)]))


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_never_asks_an_arch_over_the_latency_budget(space, predictor, name: str) -> None:  # noqa: ANN001
    budget = _median_latency(space, predictor)  # about half the random proposals are rejected
    searcher = build_searcher(name, space, total_gflops_fn(space), None, 3, evolution=SMALL_EVOLUTION,
                              latency=_cost(predictor, budget))
    objective = AnalyticObjective(space)
    asked = []
    for _ in range(30):
        arch = searcher.ask()
        searcher.tell(arch, objective.evaluate(arch))
        asked.append(arch)
    assert all(predictor(a) <= budget for a in asked)
    assert len({a.key() for a in asked}) == len(asked)


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_both_budgets_at_once(space, predictor, name: str) -> None:  # noqa: ANN001
    gflops = total_gflops_fn(space)
    budget = _median_latency(space, predictor) * 1.1
    searcher = build_searcher(name, space, gflops, 0.08, 4, evolution=SMALL_EVOLUTION, latency=_cost(predictor, budget))
    objective = AnalyticObjective(space)
    for _ in range(20):
        arch = searcher.ask()
        assert predictor(arch) <= budget and gflops(arch) <= 0.08
        searcher.tell(arch, objective.evaluate(arch))


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_budget_below_the_fastest_subnet_is_refused(space, predictor, name: str) -> None:  # noqa: ANN001
    fastest = predictor.fastest()[1]
    with pytest.raises(BudgetError, match="below the fastest subnet") as e:
        build_searcher(name, space, total_gflops_fn(space), None, 0, evolution=SMALL_EVOLUTION,
                       latency=_cost(predictor, fastest * 0.99))
    assert e.value.key == "search.budget_latency_ms"


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_an_unmeetable_latency_budget_fails_after_bounded_tries(space, predictor, name: str) -> None:  # noqa: ANN001
    budget = predictor.fastest()[1]  # only the fastest arch (and few others) fit
    searcher = build_searcher(name, space, total_gflops_fn(space), None, 0, evolution=SMALL_EVOLUTION, max_tries=50,
                              latency=_cost(predictor, budget))
    with pytest.raises(BudgetError, match="after 50 proposals"):
        for _ in range(5):
            arch = searcher.ask()
            searcher.tell(arch, AnalyticObjective(space).evaluate(arch))


def test_nsga2_minimises_predicted_latency_as_its_second_objective(space, predictor) -> None:  # noqa: ANN001
    searcher = build_searcher("nsga2", space, total_gflops_fn(space), None, 0, latency=_cost(predictor, None, objective=True))
    objective = AnalyticObjective(space)
    asked = []
    for _ in range(5):
        arch = searcher.ask()
        searcher.tell(arch, objective.evaluate(arch))
        asked.append(arch)
    values = [t.values for t in searcher._study.trials if t.values is not None]
    assert [v[1] for v in values] == pytest.approx([predictor(a) for a in asked])


def test_the_fastest_subnet_of_a_pinned_space_keeps_the_pins(space, predictor) -> None:  # noqa: ANN001
    """With search.fix the floor of a latency budget is the pinned space's fastest subnet."""
    pins = {"body.resolution": max(space.choices_for("body.resolution"))}
    pinned = space.pinned(pins)
    arch, fastest = predictor.fastest(pinned)
    assert arch.to_flat()["body.resolution"] == pins["body.resolution"]
    assert fastest == pytest.approx(predictor(arch)) and fastest > predictor.fastest()[1]
    with pytest.raises(BudgetError, match="below the fastest subnet"):
        build_searcher("random", pinned, total_gflops_fn(space), None, 0,
                       latency=LatencyCost(predict=predictor, budget_ms=fastest * 0.99, fastest_ms=fastest))
