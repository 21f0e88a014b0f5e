"""Searchers (random, evolution, TPE, NSGA-II), objectives and Pareto utilities.

Pure core: imports none of ray, mlflow, sqlalchemy or rich (Optuna is used in memory only).
"""

from nasplat.search import _evolution, _optuna, _random  # noqa: F401  (fill the registry)
from nasplat.search._evolution import EvolutionSearcher
from nasplat.search._optuna import NSGA2Searcher, TPESearcher, optuna_param_name
from nasplat.search._random import RandomSearcher
from nasplat.search.base import SEARCHERS, LatencyCost, Searcher, build_searcher, register_searcher
from nasplat.search.cost import describe_budget, gflops_parts, total_gflops_fn, within_budget
from nasplat.search.evaluation import Evaluation
from nasplat.search.objectives import (
    OBJECTIVES,
    AnalyticFactory,
    AnalyticObjective,
    Objective,
    ObjectiveFactory,
    calibrate_work,
)
from nasplat.search.pareto import hypervolume, pareto_indices

__all__ = [
    "OBJECTIVES",
    "SEARCHERS",
    "AnalyticFactory",
    "AnalyticObjective",
    "Evaluation",
    "EvolutionSearcher",
    "LatencyCost",
    "NSGA2Searcher",
    "Objective",
    "ObjectiveFactory",
    "RandomSearcher",
    "Searcher",
    "TPESearcher",
    "build_searcher",
    "calibrate_work",
    "describe_budget",
    "gflops_parts",
    "hypervolume",
    "optuna_param_name",
    "pareto_indices",
    "register_searcher",
    "total_gflops_fn",
    "within_budget",
]
