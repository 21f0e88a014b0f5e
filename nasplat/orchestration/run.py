"""`run_search(experiment)`: the search phase of an experiment, as the CLI and `nasplat run` call it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from nasplat.errors import ConfigError
from nasplat.orchestration.driver import ProgressUpdate, SearchResult, SearchSettings, drive, summarize
from nasplat.search import EvolutionSettings
from nasplat.search.objectives import AnalyticFactory, ObjectiveFactory, WholeBodyFactory

if TYPE_CHECKING:  # pragma: no cover
    from nasplat.train.config import Experiment


def settings_from_experiment(experiment: Experiment, *, cluster: bool = False, executor: str = "ray") -> SearchSettings:
    """SearchSettings from an experiment's `search` and `cluster` sections. `cluster` joins
    `cluster.address` instead of starting embedded local Ray."""
    s = experiment.search
    if cluster and not experiment.cluster.address:
        raise ConfigError("--cluster needs cluster.address (e.g. auto or ray://host:10001)", source=str(experiment.path), key="cluster.address")
    ev = s.evolution
    return SearchSettings(
        experiment=experiment.name,
        sampler=s.sampler,
        n_trials=s.n_trials,
        budget_gflops=s.budget_gflops,
        seed=s.seed,
        objective=s.objective,
        storage_url=experiment.storage_url,
        num_evaluators=s.num_evaluators,
        evolution=EvolutionSettings(ev.population, ev.top_k, ev.mutations, ev.crossovers, ev.mutation_prob),
        executor="local" if executor == "local" else "ray",
        ray_address=experiment.cluster.address if cluster else None,
        cpus_per_evaluator=experiment.cluster.cpus_per_worker,
        gpus_per_evaluator=1.0 if experiment.cluster.use_gpu else 0.0,
    )


def objective_factory(experiment: Experiment, name: str | None = None, work: int = 0) -> ObjectiveFactory:
    """The picklable factory of the experiment's objective (`search.objective` unless `name`)."""
    name = name or experiment.search.objective
    if name == "analytic":
        return AnalyticFactory(str(experiment.space_path), work=work)
    if name == "wholebody":
        device = "cuda" if experiment.cluster.use_gpu else "cpu"
        return WholeBodyFactory(str(experiment.path), device)
    raise ConfigError(f"unknown objective {name!r}; allowed: analytic, wholebody", source=str(experiment.path), key="search.objective")


def make_tracker(experiment: Experiment):  # noqa: ANN201 - MlflowTracker, imported lazily
    from nasplat.tracking import MlflowTracker

    return MlflowTracker(experiment.tracking_uri, experiment.tracking_experiment, Path(experiment.output_dir) / "mlartifacts")


def run_search(
    experiment: Experiment,
    *,
    objective: ObjectiveFactory | str | None = None,
    new_study: bool = False,
    progress: Callable[[ProgressUpdate], None] | None = None,
    cluster: bool = False,
    executor: str = "ray",
    track: bool = True,
) -> SearchResult:
    """Run or resume the experiment's search to `search.n_trials` COMPLETE trials, logging to
    MLflow, and return the result (best trial, Pareto front, all trials).

    objective: a factory (called once in each evaluator process), an objective name, or None for
        `search.objective`. Its name (for a factory: `analytic` or `wholebody` by type, else
        `custom`) is part of the stored study's identity.
    Raises BudgetError, StoreError (the message names --new-study), ConfigError, NasplatError.
    """
    if objective is None or isinstance(objective, str):
        factory = objective_factory(experiment, objective)
        name = objective or experiment.search.objective
    else:
        factory = objective
        name = {AnalyticFactory: "analytic", WholeBodyFactory: "wholebody"}.get(type(objective), "custom")
    settings = settings_from_experiment(experiment, cluster=cluster, executor=executor)
    if name != settings.objective:
        from dataclasses import replace

        settings = replace(settings, objective=name)
    tracker = make_tracker(experiment) if track else None
    return drive(experiment.space, settings, factory, new_study=new_study, progress=progress, tracker=tracker)


def report(experiment: Experiment) -> SearchResult:
    """Re-tag the Pareto front and re-log the figures from the store (`nasplat search --report`).
    Raises StoreError when the experiment has no study yet."""
    from nasplat.errors import StoreError
    from nasplat.store import load_current_study

    store = load_current_study(experiment.storage_url, experiment.name)
    if store is None:
        raise StoreError(f"experiment {experiment.name!r} has no study yet; run `nasplat search` first", source=str(experiment.path))
    trials = store.trials()
    n_trials = store.attrs().get("n_trials", experiment.search.n_trials)
    done = sum(1 for t in trials if t.evaluation is not None)
    tracker = make_tracker(experiment)
    tracker.start(store.study_name, {"study": store.study_name})
    tracker.finish(trials, store.identity.budget_gflops, finished=done >= int(n_trials))
    return summarize(store, trials)
