"""Fixtures of the orchestration tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_local():  # noqa: ANN201
    """An embedded local Ray of 2 CPUs for the module's tests, shut down after them."""
    import ray

    from nasplat.orchestration.cluster import init_ray

    init_ray(None, num_cpus=2)
    yield
    ray.shutdown()
