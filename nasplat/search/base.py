"""The ask/tell searcher contract and the registry of searchers.

Contract (every implementation, tested in `tests/search/test_contract.py`):

- `ask()` returns an `Arch` of the space whose analytic GFLOPs are within the budget (on the
  total and, with part budgets, on each part as `gflops_parts` counts it), whose predicted latency
  (`LatencyCost`, when given) is within the latency budget, and that this searcher never returned
  before. Duplicates and over-budget proposals are resolved inside `ask`
  without evaluation: they are re-proposed (after telling a model-based searcher what it proposed),
  at most `max_tries` times per call, then `BudgetError`. Duplicates never count toward a budget.
- `tell(arch, evaluation)` reports the result of an arch returned by `ask`; `None` means its
  evaluation failed for good. Results may be told in any order, several asks may be outstanding.
- Determinism: the same seed and the same sequence of ask/tell calls give the same archs. That is
  what makes a searcher restorable from a study store: replaying the recorded asks and tells in
  their recorded order rebuilds its state exactly.
- A budget below the smallest arch's GFLOPs, a part budget below that part of the smallest arch
  (the smallest in every part: every size at its minimum), or a latency budget below the fastest
  subnet's predicted latency, raises `BudgetError` in the constructor.
- With `LatencyCost(objective=True)` the searchers' cost objective is the predicted latency
  instead of GFLOPs (NSGA-II's second objective, evolution's Pareto parents).
- With a predictor (`search.predictor`), once `warmup` results are told, each `ask` proposes up to `screen` distinct feasible new candidates and returns
  the one the predictor picks (`nasplat.search.predictor.Screen`); `last_prediction` then holds
  what it predicted and the candidates it screened out. Those are not proposed in the sense of
  the contract: they may be proposed again later. Determinism holds: the predictor is refitted
  from the told results alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ClassVar, Container, Mapping, TypeVar

import numpy as np

from nasplat.config import EvolutionConfig, PredictorConfig
from nasplat.errors import BudgetError, ConfigError, NasplatError
from nasplat.search.cost import GflopsFn, describe_budget, gflops_parts, within_budget
from nasplat.search.evaluation import Evaluation, Prediction
from nasplat.space import Arch, SearchSpace

if TYPE_CHECKING:
    from nasplat.search.predictor import Screen

DEFAULT_MAX_TRIES = 2000


@dataclass(frozen=True)
class LatencyCost:
    """Predicted latency as a cost of the search (`nasplat.latency.LatencyPredictor` is one).

    predict: arch -> predicted milliseconds on the table's device.
    budget_ms: the latency budget, None for none.
    fastest_ms: the lowest prediction over the space (`LatencyPredictor.fastest`).
    objective: minimise latency instead of GFLOPs where a searcher has a cost objective.
    device: where the table was measured, for messages.
    fingerprint: the table's device fingerprint.
    """

    predict: Callable[[Arch], float]
    budget_ms: float | None = None
    fastest_ms: float = 0.0
    objective: bool = False
    device: str = ""
    fingerprint: str = ""  # the table's device fingerprint (part of a study's identity)


class Searcher(ABC):
    """Base of every searcher: feasibility, deduplication and bounded re-proposal live here;
    subclasses implement `_propose` and `_observe` (and may use the hooks)."""

    name: ClassVar[str] = "base"

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
        """`part_budgets`: GFLOPs limits by part (ZoomNAS: body, face, hand), None for none;
        `part_cost`: arch -> GFLOPs by part, as the evaluations count them (the task's
        `Task.gflops`; None: ZoomNet's `gflops_parts(space)`, needed only with part budgets).
        `predictor`: screen the proposals with an accuracy predictor (None: evaluate every
        proposal). Raises BudgetError when no arch of the space fits `budget_gflops`, a part
        budget or the latency budget."""
        self.space = space
        self.latency = latency
        self.cost = cost
        self.budget = budget_gflops
        self.part_budgets = dict(part_budgets) if part_budgets else None
        if part_cost is None and self.part_budgets:
            part_cost = gflops_parts(space)
        self.part_cost = part_cost  # arch -> GFLOPs by part, as the evaluations count them
        self.seed = seed
        self.max_tries = max_tries
        self.rng = np.random.default_rng(seed)
        self._proposed: dict[str, Arch] = {}
        self._results: dict[str, Evaluation | None] = {}
        self.last_prediction: Prediction | None = None  # set by an `ask` the predictor screened
        self.screen: Screen | None = None
        if predictor is not None:
            from nasplat.search.predictor import Screen  # torch, only when a predictor is asked for

            self.screen = Screen(space, predictor, seed)
        if budget_gflops is not None:
            floor = cost(space.min_arch())
            if budget_gflops < floor:
                raise BudgetError(
                    f"budget {budget_gflops} GFLOPs is below the smallest arch of space "
                    f"{space.name!r} ({floor:.4f} GFLOPs)",
                    key="search.budget_gflops",
                )
        if self.part_budgets:
            smallest = self.part_cost(space.min_arch())  # type: ignore[misc]  # the smallest in every part too
            for part, limit in self.part_budgets.items():
                if limit < smallest[part]:
                    raise BudgetError(
                        f"budget {limit} GFLOPs for the {part} is below the {part} of the smallest arch of space "
                        f"{space.name!r} ({smallest[part]:.4f} GFLOPs)",
                        key=f"search.budget_gflops.{part}",
                    )
        if latency is not None and latency.budget_ms is not None and latency.budget_ms < latency.fastest_ms:
            raise BudgetError(
                f"budget {latency.budget_ms} ms is below the fastest subnet of space {space.name!r} "
                f"({latency.fastest_ms:.3f} ms predicted, {latency.device or 'latency table'})",
                key="search.budget_latency_ms",
            )

    # --- public contract -------------------------------------------------------------------
    def feasible(self, arch: Arch) -> bool:
        """True when `arch` is within the GFLOPs budget, each part budget and the latency budget
        (always when there are none)."""
        if self.budget is not None and self.cost(arch) > self.budget:
            return False
        if self.part_budgets and not within_budget(self.part_cost(arch), None, self.part_budgets):  # type: ignore[misc]
            return False
        return self.latency_budget is None or self.latency.predict(arch) <= self.latency_budget  # type: ignore[union-attr]

    @property
    def latency_budget(self) -> float | None:
        return None if self.latency is None else self.latency.budget_ms

    def objective_cost(self, arch: Arch, evaluation: Evaluation) -> float:
        """The cost a multi-objective searcher minimises: predicted latency with
        `LatencyCost(objective=True)`, else the evaluation's GFLOPs."""
        if self.latency is not None and self.latency.objective:
            return float(self.latency.predict(arch))
        return evaluation.total_gflops

    def search_cost(self, arch: Arch) -> float:
        """The cost objective of an arch before it is evaluated: predicted latency with
        `LatencyCost(objective=True)`, else its analytic GFLOPs (what its evaluation reports)."""
        if self.latency is not None and self.latency.objective:
            return float(self.latency.predict(arch))
        return float(self.cost(arch))

    def ask(self) -> Arch:
        """A new, feasible arch (the predictor's pick among up to `screen` of them, once it
        screens). Raises BudgetError after `max_tries` proposals without one."""
        self.last_prediction = None
        results = self.results()
        if self.screen is not None and self.screen.ready(len(results)):
            return self._ask_screened(results)
        arch = self._new_arch(())
        if arch is None:
            raise self._exhausted()
        self._proposed[arch.key()] = arch
        self._on_accept(arch)
        return arch

    def _new_arch(self, taken: Container[str]) -> Arch | None:
        """A proposal that is feasible, never asked before and not in `taken`; None after
        `max_tries` proposals without one."""
        for _ in range(self.max_tries):
            arch = self._propose()
            key = arch.key()
            if key in self._proposed or key in taken:
                self._on_duplicate(arch, self._results.get(key))
                continue
            if not self.feasible(arch):
                self._on_infeasible(arch, self.cost(arch))
                continue
            return arch
        return None

    def _ask_screened(self, results: list[tuple[Arch, Evaluation]]) -> Arch:
        """Up to `screen` distinct candidates, each accepted as a proposal would be (`_on_accept`:
        evolution counts them as members of its generation), then the predictor's pick."""
        assert self.screen is not None
        candidates: list[Arch] = []
        keys: set[str] = set()
        for _ in range(self.screen.config.screen):
            arch = self._new_arch(keys)
            if arch is None:
                break
            self._on_accept(arch)
            candidates.append(arch)
            keys.add(arch.key())
        if not candidates:
            raise self._exhausted()
        measured = [(a, self.objective_cost(a, e), e.score) for a, e in results]
        chosen, self.last_prediction = self.screen.choose(
            candidates, [self.search_cost(a) for a in candidates], measured, self._reference_cost())
        for arch, _, _ in self.last_prediction.screened_out:
            self._on_screened_out(arch)
        self._proposed[chosen.key()] = chosen
        return chosen

    def _reference_cost(self) -> float:
        """Where the front's hypervolume ends on the cost axis: the budget on the cost objective,
        else the cost of the space's largest arch."""
        if self.latency is not None and self.latency.objective:
            return self.latency_budget if self.latency_budget is not None else self.search_cost(self.space.max_arch())
        return self.budget if self.budget is not None else self.search_cost(self.space.max_arch())

    def _exhausted(self) -> BudgetError:
        gflops_limited = self.budget is not None or self.part_budgets is not None
        limits = [describe_budget(self.budget, self.part_budgets)] if gflops_limited else []
        if self.latency_budget is not None:
            limits.append(f"{self.latency_budget} ms")
        within = " and ".join(limits) or "the budget"
        return BudgetError(
            f"{self.name} searcher found no new arch within {within} after "
            f"{self.max_tries} proposals ({len(self._proposed)} already proposed); raise the budget "
            f"or lower n_trials",
            key="search.budget_gflops" if self.latency_budget is None else "search.budget_latency_ms",
        )

    def tell(self, arch: Arch, evaluation: Evaluation | None) -> None:
        """Report the result of an arch returned by `ask` (None: failed).

        Raises NasplatError for an arch that was not asked or was already told."""
        key = arch.key()
        if key not in self._proposed:
            raise NasplatError(f"{self.name} searcher was told an arch it never proposed")
        if key in self._results:
            raise NasplatError(f"{self.name} searcher was told the same arch twice")
        self._results[key] = evaluation
        self._observe(arch, evaluation)

    @property
    def n_proposed(self) -> int:
        return len(self._proposed)

    def results(self) -> list[tuple[Arch, Evaluation]]:
        """Successful results told so far, in telling order."""
        return [(self._proposed[k], e) for k, e in self._results.items() if e is not None]

    # --- for subclasses ----------------------------------------------------------------------
    @abstractmethod
    def _propose(self) -> Arch:
        """A candidate (may be a duplicate or over budget; `ask` filters)."""

    @abstractmethod
    def _observe(self, arch: Arch, evaluation: Evaluation | None) -> None:
        """Learn from a told result."""

    def _on_duplicate(self, arch: Arch, known: Evaluation | None) -> None:
        """The last proposal repeats an earlier one (`known`: its result if told). No-op."""

    def _on_infeasible(self, arch: Arch, gflops: float) -> None:
        """The last proposal is over budget. No-op."""

    def _on_accept(self, arch: Arch) -> None:
        """The last proposal is returned by `ask`, or is one of the candidates the predictor
        screens. No-op."""

    def _on_screened_out(self, arch: Arch) -> None:
        """A candidate accepted by `_on_accept` was passed over by the predictor: it will not be
        evaluated (and may be proposed again). No-op."""


S = TypeVar("S", bound=type[Searcher])
SEARCHERS: dict[str, type[Searcher]] = {}


def register_searcher(name: str) -> Callable[[S], S]:
    """Class decorator adding a searcher to `SEARCHERS` under `name`."""

    def deco(cls: S) -> S:
        cls.name = name
        SEARCHERS[name] = cls
        return cls

    return deco


def build_searcher(
    name: str,
    space: SearchSpace,
    cost: Callable[[Arch], float],
    budget_gflops: float | None,
    seed: int,
    evolution: EvolutionConfig | None = None,
    max_tries: int = DEFAULT_MAX_TRIES,
    latency: LatencyCost | None = None,
    part_budgets: Mapping[str, float] | None = None,
    predictor: PredictorConfig | None = None,
    part_cost: GflopsFn | None = None,
) -> Searcher:
    """The registered searcher `name`. Raises ConfigError for an unknown name, BudgetError for a
    budget (on the total or a part) below the space's smallest (or, for latency, fastest) arch."""
    cls = SEARCHERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown sampler {name!r}; allowed: {', '.join(sorted(SEARCHERS))}", key="search.sampler")
    if name == "evolution":
        return cls(space, cost, budget_gflops, seed, max_tries=max_tries, latency=latency,  # type: ignore[call-arg]
                   part_budgets=part_budgets, settings=evolution or EvolutionConfig(), predictor=predictor,
                   part_cost=part_cost)
    return cls(space, cost, budget_gflops, seed, max_tries=max_tries, latency=latency, part_budgets=part_budgets,
               predictor=predictor, part_cost=part_cost)
