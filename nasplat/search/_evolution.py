from __future__ import annotations

from typing import Callable, Mapping

from nasplat.errors import ConfigError
from nasplat.config import EvolutionConfig, PredictorConfig
from nasplat.search.cost import GflopsFn
from nasplat.search.base import DEFAULT_MAX_TRIES, LatencyCost, Searcher, register_searcher
from nasplat.search.evaluation import Evaluation
from nasplat.search.pareto import pareto_indices
from nasplat.space import Arch, SearchSpace


_STALL = 50  # consecutive rejected children before falling back to a random proposal


@register_searcher("evolution")
class EvolutionSearcher(Searcher):
    """Evolutionary search as in mmrazor's EvolutionSearchLoop / SPOS.

    The first `population` proposals are random feasible archs. After that, proposals come in
    generations of `mutations` mutants then `crossovers` children. The parents of a generation are
    chosen among all results told when it starts (elitist): half of `top_k` are the best archs by
    whole-body AP (mmrazor's rule: push the best under the budget), the other half are taken along
    the (GFLOPs, AP) Pareto front under the budget, front by front (best AP first within a front),
    so the children also improve the cheaper archs a smaller budget would pick. On the analytic
    objective this raises the hypervolume under the budget from random's level to about 1.05x while
    keeping the best AP of pure top-k by AP (benchmarks/bench_searchers.py). Mutation resamples each choice with `mutation_prob`
    (`space.mutate`); crossover takes each choice from either parent (`space.crossover`). Until a
    result is known (all evaluations still running) proposals are random, and so is any proposal
    after `_STALL` consecutive duplicates or over-budget children (a converged top-k whose
    neighbourhood is exhausted), so the search keeps exploring instead of failing.

    With a predictor (`search.predictor`) each candidate it screens counts as a member of the
    generation, so a real evaluation is picked among mutants and children of the same parents.
    """

    def __init__(
        self,
        space: SearchSpace,
        cost: Callable[[Arch], float],
        budget_gflops: float | None,
        seed: int,
        max_tries: int = DEFAULT_MAX_TRIES,
        settings: EvolutionConfig = EvolutionConfig(),
        latency: LatencyCost | None = None,
        part_budgets: Mapping[str, float] | None = None,
        predictor: PredictorConfig | None = None,
        part_cost: GflopsFn | None = None,
    ) -> None:
        """Raises ConfigError for top_k > population or an empty generation; BudgetError as the base."""
        if settings.top_k > settings.population:
            raise ConfigError(
                f"top_k {settings.top_k} exceeds population {settings.population}", key="search.evolution.top_k"
            )
        if settings.mutations + settings.crossovers < 1:
            raise ConfigError("mutations + crossovers must be at least 1", key="search.evolution")
        super().__init__(space, cost, budget_gflops, seed, max_tries, latency=latency, part_budgets=part_budgets,
                         predictor=predictor, part_cost=part_cost)
        self.settings = settings
        self._accepted = 0
        self._rejected_in_row = 0
        self._parents: list[Arch] = []

    def _generation_slot(self) -> int:
        return (self._accepted - self.settings.population) % (self.settings.mutations + self.settings.crossovers)

    def _propose(self) -> Arch:
        s = self.settings
        if self._accepted < s.population or self._rejected_in_row >= _STALL:
            return self.space.sample(self.rng)
        if self._generation_slot() == 0 or not self._parents:
            self._parents = self._select_parents()
        if not self._parents:
            return self.space.sample(self.rng)
        if self._generation_slot() < s.mutations:
            parent = self._parents[int(self.rng.integers(len(self._parents)))]
            return self.space.mutate(parent, self.rng, s.mutation_prob)
        i, j = self.rng.integers(len(self._parents), size=2)
        return self.space.crossover(self._parents[int(i)], self._parents[int(j)], self.rng)

    def _select_parents(self) -> list[Arch]:
        results = [(a, e) for a, e in self.results() if e is not None]
        by_ap = sorted(range(len(results)), key=lambda i: -results[i][1].score)
        k = self.settings.top_k
        chosen = by_ap[: (k + 1) // 2]
        taken = set(chosen)
        points = [(self.objective_cost(a, e), e.score) for a, e in results]
        rest = list(range(len(results)))
        while rest and len(chosen) < k:  # bounded: every pass removes a non-empty front
            front = [rest[j] for j in pareto_indices([points[i] for i in rest])]
            for i in sorted(front, key=lambda i: -points[i][1]):
                if len(chosen) < k and i not in taken:
                    chosen.append(i)
                    taken.add(i)
            front_set = set(front)
            rest = [i for i in rest if i not in front_set]
        return [results[i][0] for i in chosen]

    def _on_accept(self, arch: Arch) -> None:
        self._accepted += 1
        self._rejected_in_row = 0

    def _on_duplicate(self, arch: Arch, known: Evaluation | None) -> None:
        self._rejected_in_row += 1

    def _on_infeasible(self, arch: Arch, gflops: float) -> None:
        self._rejected_in_row += 1

    def _observe(self, arch: Arch, evaluation: Evaluation | None) -> None:
        return None
