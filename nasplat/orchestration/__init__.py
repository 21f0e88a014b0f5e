"""Ray evaluator actors, the search driver loop and `run_search` (the entry point after training)."""

from nasplat.orchestration.driver import (
    ProgressUpdate,
    SearchResult,
    SearchSettings,
    TrialLogger,
    drive,
    identity_of,
    replay,
)
from nasplat.orchestration.pool import EvaluatorPool, LocalEvaluatorPool, PoolResult, RayEvaluatorPool, init_ray
from nasplat.orchestration.run import objective_factory, run_search, settings_from_experiment

__all__ = [
    "EvaluatorPool",
    "LocalEvaluatorPool",
    "PoolResult",
    "ProgressUpdate",
    "RayEvaluatorPool",
    "SearchResult",
    "SearchSettings",
    "TrialLogger",
    "drive",
    "identity_of",
    "init_ray",
    "objective_factory",
    "replay",
    "run_search",
    "settings_from_experiment",
]
