from __future__ import annotations

import dataclasses

import pytest

from nasplat.config import load_experiment
from nasplat.errors import ConfigError
from nasplat.orchestration.cluster import for_command


def test_local_drops_the_address_and_cluster_keeps_it(tmp_path, tiny_experiment):
    experiment = load_experiment(tiny_experiment(tmp_path / "e"))
    joined = dataclasses.replace(experiment, cluster=dataclasses.replace(experiment.cluster, address="auto"))
    assert for_command(joined, cluster=False).cluster.address is None
    assert for_command(joined, cluster=True).cluster.address == "auto"
    assert for_command(experiment, cluster=False) is experiment
    with pytest.raises(ConfigError, match="cluster.address"):
        for_command(experiment, cluster=True)
