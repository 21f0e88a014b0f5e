"""The latency table of an experiment: profiled once into the output directory, then loaded.

`latency_cost(experiment)` is what the search needs when `search.budget_latency_ms` is set or
`search.cost` is latency: the table at `experiment.latency_lut` (profiled with
`search.latency_profile` when missing and `profile` is true; an interrupted profile resumes),
checked against this machine, as a `LatencyCost` with the fastest predicted subnet of the space
the search samples (`search.fix` pinned).
`check_budgets` raises the BudgetError a search would raise, before anything is written, so
`nasplat run` refuses an impossible budget before it trains.
"""

from __future__ import annotations

from collections.abc import Callable

from nasplat.config import Experiment
from nasplat.errors import ConfigError
from nasplat.files import shell_command
from nasplat.latency import LatencyPredictor, load_table
from nasplat.latency.profile import profile_space
from nasplat.latency.timing import TimingSettings, machine
from nasplat.search import LatencyCost, build_searcher
from nasplat.tasks import get_task

__all__ = ["check_budgets", "latency_cost"]


LUT_KEY = "latency_lut.json"  # under the storage root: the default latency table


def latency_cost(experiment: Experiment, *, profile: bool = True,
                 progress: Callable[[int, int, str], None] | None = None) -> LatencyCost | None:
    """The search's latency cost, or None when the search does not use latency. Raises
    ConfigError (a missing table with `profile` false, a table of another machine or space)."""
    search = experiment.search
    if not search.uses_latency:
        return None
    path = experiment.latency_lut
    # the default table lives under the storage root: from an object store, this node's copy
    stored = experiment.storage.is_remote and not search.latency_lut
    if stored and not path.exists() and experiment.storage.exists(LUT_KEY):
        experiment.storage.download(LUT_KEY, path)
    if not path.exists():
        if not profile:
            raise ConfigError(f"latency table {path} does not exist; `nasplat run` profiles it, or run "
                              f"`{shell_command('nasplat', 'latency', 'profile', experiment.space_path, '--out', path)}`",
                              source=str(experiment.path), key="search.latency_lut")
        p = search.latency_profile
        settings = TimingSettings(backend=p.backend, device=p.device, threads=p.threads, batch=p.batch, repeats=p.repeats,
                                  passes=p.passes)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile_space(experiment.space, settings, path, calibration=p.calibration, progress=progress)
        if stored:
            experiment.storage.upload(path, LUT_KEY)
    table = load_table(path)
    table.check_machine(machine(table.settings["device"], table.settings["backend"]), source=str(path))
    predictor = LatencyPredictor(table, experiment.space, source=str(path))
    _, fastest = predictor.fastest(experiment.search_space)  # of the space the search samples (search.fix)
    return LatencyCost(predict=predictor, budget_ms=search.budget_latency_ms, fastest_ms=fastest,
                       objective=search.cost == "latency", device=table.describe(), fingerprint=table.fingerprint)


def check_budgets(experiment: Experiment, latency: LatencyCost | None) -> None:
    """Raises BudgetError when no arch of the search's space (`search.fix` pinned) fits the GFLOPs
    budget or a part budget, or no subnet of the space fits the latency budget."""
    s = experiment.search
    parts = get_task(experiment.task).gflops(experiment)  # by part, as the evaluations count them
    build_searcher(s.sampler, experiment.search_space, lambda arch: float(parts(arch)["total"]), s.budget_gflops,
                   s.seed, evolution=s.evolution, latency=latency, part_budgets=s.part_budgets, part_cost=parts)
