from __future__ import annotations

from typing import Callable

from nasplat.errors import ConfigError
from nasplat.search.base import DEFAULT_MAX_TRIES, EvolutionSettings, Searcher, register_searcher
from nasplat.search.evaluation import Evaluation
from nasplat.space import Arch, SearchSpace


_STALL = 50  # consecutive rejected children before falling back to a random proposal


@register_searcher("evolution")
class EvolutionSearcher(Searcher):
    """Evolutionary search as in mmrazor's EvolutionSearchLoop / SPOS.

    The first `population` proposals are random feasible archs. After that, proposals come in
    generations of `mutations` mutants then `crossovers` children. The parents of a generation are
    the `top_k` archs by whole-body AP among all results told when the generation starts (elitist,
    so the top-k never gets worse). Mutation resamples each choice with `mutation_prob`
    (`space.mutate`); crossover takes each choice from either parent (`space.crossover`). Until a
    result is known (all evaluations still running) proposals are random, and so is any proposal
    after `_STALL` consecutive duplicates or over-budget children (a converged top-k whose
    neighbourhood is exhausted), so the search keeps exploring instead of failing.
    """

    def __init__(
        self,
        space: SearchSpace,
        cost: Callable[[Arch], float],
        budget_gflops: float | None,
        seed: int,
        max_tries: int = DEFAULT_MAX_TRIES,
        settings: EvolutionSettings = EvolutionSettings(),
    ) -> None:
        """Raises ConfigError for top_k > population or an empty generation; BudgetError as the base."""
        if settings.top_k > settings.population:
            raise ConfigError(
                f"top_k {settings.top_k} exceeds population {settings.population}", key="search.evolution.top_k"
            )
        if settings.mutations + settings.crossovers < 1:
            raise ConfigError("mutations + crossovers must be at least 1", key="search.evolution")
        super().__init__(space, cost, budget_gflops, seed, max_tries)
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
            ranked = sorted(self.results(), key=lambda r: -r[1].ap)
            self._parents = [a for a, _ in ranked[: s.top_k]]
        if not self._parents:
            return self.space.sample(self.rng)
        if self._generation_slot() < s.mutations:
            parent = self._parents[int(self.rng.integers(len(self._parents)))]
            return self.space.mutate(parent, self.rng, s.mutation_prob)
        i, j = self.rng.integers(len(self._parents), size=2)
        return self.space.crossover(self._parents[int(i)], self._parents[int(j)], self.rng)

    def _on_accept(self, arch: Arch) -> None:
        self._accepted += 1
        self._rejected_in_row = 0

    def _on_duplicate(self, arch: Arch, known: Evaluation | None) -> None:
        self._rejected_in_row += 1

    def _on_infeasible(self, arch: Arch, gflops: float) -> None:
        self._rejected_in_row += 1

    def _observe(self, arch: Arch, evaluation: Evaluation | None) -> None:
        return None
