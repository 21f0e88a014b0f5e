from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from nasplat.config import SearchConfig
from nasplat.orchestration.cluster import init_ray
from nasplat.orchestration.driver import drive
from nasplat.orchestration.pool import RayEvaluatorPool
from nasplat.search import AnalyticFactory
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


@pytest.fixture(scope="module")
def ray_local():  # noqa: ANN201
    import ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_two_actors_and_a_lost_actor_is_retried(tmp_path: Path, ray_local) -> None:  # noqa: ANN001
    factory = AnalyticFactory(str(SPACE), work=200)
    pool = RayEvaluatorPool(factory, 2)
    victim = pool.actor_pids()[0]
    calls = {"n": 0}

    def progress(update) -> None:  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(victim, signal.SIGKILL)  # an evaluator dies mid-search

    settings = SearchConfig(
        sampler="random",
        n_trials=10,
        budget_gflops=0.1,
        seed=0,
        objective="analytic",
        num_evaluators=2,
    )
    try:
        result = drive(load_space(SPACE), settings, factory, study="ray", storage_url=f"sqlite:///{tmp_path}/study.db",
                       pool=pool, progress=progress)
    finally:
        pool.close()
    assert result.n_complete == 10 and result.n_failed == 0
    assert len({t.key for t in result.trials if t.state == "COMPLETE"}) == 10
    assert all(t.state == "COMPLETE" for t in result.trials)  # the lost trial was retried, not re-created
    from nasplat.store import load_current_study

    notes = [t.user_attrs.get("failed_attempts") for t in load_current_study(f"sqlite:///{tmp_path}/study.db", "ray").study.get_trials()]
    noted = [a for n in notes if n for a in n]  # the lost attempt is visible on its trial
    assert len(noted) == 1 and noted[0]["lost"] and noted[0]["error"].startswith("evaluator lost")
