"""A search on a Ray cluster that another process started (`.ci/run` starts a head node on
127.0.0.1 and exports NASPLAT_TEST_RAY_ADDRESS), joined the way `--cluster` joins one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nasplat.config import SearchConfig
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.driver import drive
from nasplat.orchestration.pool import RayEvaluatorPool
from nasplat.search import AnalyticFactory
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


@pytest.fixture()
def ray_cluster():  # noqa: ANN201
    import ray

    address = os.environ.get("NASPLAT_TEST_RAY_ADDRESS")
    if not address:
        pytest.skip("NASPLAT_TEST_RAY_ADDRESS is not set")
    if ray.is_initialized():  # an embedded Ray of an earlier test module
        ray.shutdown()
    init_ray(address, num_cpus=None)
    yield address
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_search_runs_its_evaluators_on_a_running_cluster(tmp_path: Path, ray_cluster: str) -> None:
    import ray

    port = ray_cluster.rsplit(":", 1)[1]
    assert ray.get_runtime_context().gcs_address.endswith(f":{port}")  # joined, did not start its own
    factory = AnalyticFactory(str(SPACE), work=20)
    pool = RayEvaluatorPool(factory, 2)
    settings = SearchConfig(sampler="nsga2", n_trials=6, budget_gflops=0.1, seed=0, objective="analytic", num_evaluators=2)
    try:
        pids = pool.actor_pids()
        result = drive(load_space(SPACE), settings, factory, study="cluster", storage_url=f"sqlite:///{tmp_path}/study.db",
                       pool=pool)
    finally:
        pool.close()
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert result.n_complete == 6 and len({t.key for t in result.trials}) == 6
