"""Child process of the kill test: run (or resume) a serial search on the analytic objective."""

import sys

from nasplat.orchestration.driver import SearchSettings, drive
from nasplat.search import AnalyticFactory, EvolutionSettings
from nasplat.space import load_space

space_path, url, sampler, n_trials, work = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
settings = SearchSettings(
    experiment="kill",
    sampler=sampler,
    n_trials=n_trials,
    budget_gflops=0.1,
    seed=5,
    objective="analytic",
    storage_url=url,
    executor="local",
    evolution=EvolutionSettings(population=10, top_k=3, mutations=5, crossovers=5),
)
# one line per finished trial tells the parent that this run is past its imports and start-up
result = drive(load_space(space_path), settings, AnalyticFactory(space_path, work=work),
               progress=lambda update: print("trial", flush=True))
print("done", result.n_complete, flush=True)
