"""Child process of the kill test: run (or resume) a search on the analytic objective, serially in
this process (`local`) or on two Ray evaluator actors of an embedded Ray (`ray`)."""

import sys

from nasplat.config import EvolutionConfig, SearchConfig
from nasplat.orchestration.driver import drive
from nasplat.search import AnalyticFactory
from nasplat.space import load_space

space_path, url, sampler, n_trials, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
executor = sys.argv[6] if len(sys.argv) > 6 else "local"
settings = SearchConfig(
    sampler=sampler,
    n_trials=n_trials,
    budget_gflops=0.1,
    seed=5,
    objective="analytic",
    evolution=EvolutionConfig(population=10, top_k=3, mutations=5, crossovers=5),
)
# One line per trial this run completes (stored before the report) tells the parent that a kill
# now interrupts a search with finished trials; the first report comes before any evaluation.
at_start: list[int] = []


def on_progress(update) -> None:  # noqa: ANN001
    if not at_start:
        at_start.append(update.done)
    elif update.done > at_start[0]:
        print("trial", flush=True)


factory = AnalyticFactory(space_path, work=work)
pool = None
if executor == "ray":
    from nasplat.orchestration.cluster import init_ray
    from nasplat.orchestration.pool import RayEvaluatorPool

    init_ray(None, num_cpus=2)
    pool = RayEvaluatorPool(factory, 2)
result = drive(load_space(space_path), settings, factory, study="kill", storage_url=url, progress=on_progress, pool=pool)
print("done", result.n_complete, flush=True)
