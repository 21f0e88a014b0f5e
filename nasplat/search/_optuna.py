"""Optuna TPE and NSGA-II behind the ask/tell contract.

Each searcher keeps its own in-memory Optuna study (the persistent record of a search is the
study store, `nasplat.store`, which replays asks and tells into a fresh searcher on resume).

Dependent dimensions: an Optuna categorical distribution may not change its choices between
trials under one name, but the valid group numbers depend on the channels chosen. A dependent
dimension is therefore suggested under one name per parent value, `<name>|<parent>=<value>`
(e.g. `body.branch1.groups|body.branch1.channels=24`), whose choices are fixed. TPE runs with
`multivariate=True, group=True`, so it models each such conditional sub-space jointly.

The FLOPs constraint is given to Optuna with `Trial.set_constraint` (GFLOPs - budget, feasible
when <= 0; with a latency budget or part budgets too, the largest relative excess over any
limit): an over-budget proposal is told at once, without evaluation, with a placeholder AP of 0
and its GFLOPs, so the sampler learns where the budget lies. A duplicate of an arch with a known
result is told that result; a duplicate of a pending arch is told FAIL. Infeasible and duplicate
proposals never count toward the trial budget. A candidate that the accuracy predictor
(`search.predictor`) screened out is told FAIL, which both samplers leave out of their models.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import Trial, TrialState

from nasplat.config import PredictorConfig
from nasplat.search.cost import GflopsFn
from nasplat.search.base import DEFAULT_MAX_TRIES, LatencyCost, Searcher, register_searcher
from nasplat.search.evaluation import Evaluation
from nasplat.space import Arch, SearchSpace

_CONSTRAINT = "gflops_over_budget"

def optuna_param_name(space: SearchSpace, name: str, partial: dict[str, Any]) -> str:
    """The Optuna parameter name of dimension `name` given the earlier choices."""
    dim = next(d for d in space.dimensions if d.name == name)
    if dim.depends_on is None:
        return name
    return f"{name}|{dim.depends_on}={partial[dim.depends_on]}"


class _OptunaSearcher(Searcher):
    directions: tuple[str, ...] = ("maximize",)

    def __init__(
        self,
        space: SearchSpace,
        cost: Callable[[Arch], float],
        budget_gflops: float | None,
        seed: int,
        max_tries: int = DEFAULT_MAX_TRIES,
        latency: LatencyCost | None = None,
        part_budgets: Mapping[str, float] | None = None,
        predictor: PredictorConfig | None = None,
        part_cost: GflopsFn | None = None,
    ) -> None:
        """With a predictor, each screened-out candidate's Optuna trial is told FAIL: TPE and
        NSGA-II leave failed trials out of their models, so no prediction reaches them."""
        super().__init__(space, cost, budget_gflops, seed, max_tries, latency=latency, part_budgets=part_budgets,
                         predictor=predictor, part_cost=part_cost)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = self._make_sampler(seed)
        self._study = optuna.create_study(directions=list(self.directions), sampler=sampler)
        self._last: Trial | None = None
        self._trial_of: dict[str, Trial] = {}

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _values(self, arch: Arch, ap: float, gflops: float) -> list[float]:
        if len(self.directions) == 1:
            return [ap]
        if self.latency is not None and self.latency.objective:
            return [ap, float(self.latency.predict(arch))]
        return [ap, gflops]

    def _propose(self) -> Arch:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trial = self._study.ask()
            flat: dict[str, Any] = {}
            for d in self.space.dimensions:
                choices = list(self.space.choices_for(d.name, flat))
                if not choices:  # a block its stage's depth does not run: no parameter of this trial
                    continue
                flat[d.name] = trial.suggest_categorical(optuna_param_name(self.space, d.name, flat), choices)
        self._last = trial
        return self.space.arch_type.from_flat(flat)

    def _tell_last(self, values: list[float] | None, over: float) -> None:
        assert self._last is not None  # set by _propose just before
        self._last.set_constraint(_CONSTRAINT, over)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if values is None:
                self._study.tell(self._last, state=TrialState.FAIL)
            else:
                self._study.tell(self._last, values)
        self._last = None

    def _over(self, arch: Arch) -> float:
        gflops_over = 0.0 if self.budget is None else self.cost(arch) - self.budget
        if self.latency_budget is None and not self.part_budgets:
            return gflops_over
        # several limits: feasible when none is exceeded; the largest relative excess
        excess = [] if self.budget is None else [gflops_over / self.budget]
        if self.latency_budget is not None:
            excess.append((self.latency.predict(arch) - self.latency_budget) / self.latency_budget)  # type: ignore[union-attr]
        if self.part_budgets:
            parts = self.part_cost(arch)
            excess.extend((parts[part] - limit) / limit for part, limit in self.part_budgets.items())
        return max(excess)

    def _on_duplicate(self, arch: Arch, known: Evaluation | None) -> None:
        if known is None:
            self._tell_last(None, self._over(arch))
        else:
            self._tell_last(self._values(arch, known.score, known.total_gflops), self._over(arch))

    def _on_infeasible(self, arch: Arch, gflops: float) -> None:
        self._tell_last(self._values(arch, 0.0, gflops), self._over(arch))

    def _on_accept(self, arch: Arch) -> None:
        assert self._last is not None
        self._trial_of[arch.key()] = self._last
        self._last = None

    def _on_screened_out(self, arch: Arch) -> None:
        # FAIL: TPE and NSGA-II leave failed trials out of their models, so the sampler learns
        # nothing from a candidate that was predicted, not measured
        self._last = self._trial_of.pop(arch.key())
        self._tell_last(None, self._over(arch))

    def _observe(self, arch: Arch, evaluation: Evaluation | None) -> None:
        self._last = self._trial_of.pop(arch.key())
        if evaluation is None:
            self._tell_last(None, self._over(arch))
        else:
            self._tell_last(self._values(arch, evaluation.score, evaluation.total_gflops), self._over(arch))


@register_searcher("tpe")
class TPESearcher(_OptunaSearcher):
    """Optuna TPE maximising whole-body AP subject to GFLOPs <= budget."""

    directions = ("maximize",)

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


@register_searcher("nsga2")
class NSGA2Searcher(_OptunaSearcher):
    """Optuna NSGA-II on (whole-body AP up, GFLOPs down) with the budget as a constraint: one
    search gives the Pareto front. With `LatencyCost(objective=True)` the second objective is the
    predicted latency."""

    directions = ("maximize", "minimize")

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(population_size=50, seed=seed)
