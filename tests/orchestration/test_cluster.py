from __future__ import annotations

import dataclasses
import subprocess
import sys

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


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_an_embedded_ray_too_small_for_the_next_phase_is_started_again_at_its_size():
    """A search leaves a 1-CPU local Ray running; training then asks for 2 workers: without a
    restart its worker group would wait for resources for ever."""
    import ray

    from nasplat.orchestration.cluster import init_ray

    try:
        assert init_ray(None, num_cpus=1)
        assert init_ray(None, num_cpus=1) is False  # big enough: kept
        assert init_ray(None, num_cpus=2)  # too small: started again
        assert ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_a_sigterm_after_ray_shut_down_reaches_the_python_handler():
    """Ray's shutdown resets the C-level SIGTERM handler while Python still reports its own: a
    `nasplat run` whose training phase had shut its Ray down then died of a SIGTERM in the search
    with no line (exit -15). Run in a child process: the signal must reach the handler."""
    code = (
        "import os, signal, time\n"
        "from nasplat.orchestration.cluster import init_ray, shutdown_ray\n"
        "seen = []\n"
        "signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))\n"
        "init_ray(None, num_cpus=1)\n"
        "shutdown_ray()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(0.5)\n"
        "print('handled' if seen else 'not handled')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "handled"
