from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nasplat.config import SearchConfig
from nasplat.orchestration.driver import drive
from nasplat.orchestration.pool import RayEvaluatorPool
from nasplat.search import AnalyticFactory
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


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


class _HangingObjective:
    """The analytic objective, except that an evaluation that can take one of the token files in
    `tokens` (an atomic remove, so each token hangs exactly one evaluation) never returns."""

    def __init__(self, space_path: str, tokens: str) -> None:
        from nasplat.search.objectives import AnalyticObjective

        self._inner = AnalyticObjective(load_space(space_path))
        self._tokens = Path(tokens)

    def evaluate(self, arch):  # noqa: ANN001, ANN201
        import time

        for token in sorted(self._tokens.glob("hang-*")):
            try:
                token.unlink()
            except FileNotFoundError:
                continue  # another evaluator took it
            time.sleep(3600)
        return self._inner.evaluate(arch)


@dataclass(frozen=True)
class _HangingFactory:
    space_path: str
    tokens: str

    def __call__(self) -> _HangingObjective:
        return _HangingObjective(self.space_path, self.tokens)


def _hang_tokens(folder: Path, n: int) -> str:
    folder.mkdir()
    for i in range(n):
        (folder / f"hang-{i}").touch()
    return str(folder)


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.parametrize("size, hangs", [(2, 1), (1, 2)])
def test_a_hung_evaluation_times_out_is_retried_once_then_fails(tmp_path: Path, ray_local, caplog, size, hangs) -> None:  # noqa: ANN001
    """One hang: the evaluator is replaced and the trial completes on the retry. The same trial
    hanging twice (one slot, so both attempts hang): it fails for good, saying why, and the
    search goes on to its budget."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test module is not importable in workers
    factory = _HangingFactory(str(SPACE), _hang_tokens(tmp_path / "tokens", hangs))
    pool = RayEvaluatorPool(factory, size)
    settings = SearchConfig(sampler="random", n_trials=4, budget_gflops=0.1, seed=0, objective="analytic",
                            num_evaluators=size, trial_timeout_s=3)
    try:
        with caplog.at_level("WARNING"):
            result = drive(load_space(SPACE), settings, factory, study="hang", storage_url=f"sqlite:///{tmp_path}/study.db",
                           pool=pool)
    finally:
        pool.close()
    assert not list((tmp_path / "tokens").iterdir())  # every hang happened
    assert "evaluation timed out after 3 s" in caplog.text
    assert result.n_complete == 4
    failed = [t for t in result.trials if t.outcome == "failed"]
    if hangs == 1:
        assert not failed and all(t.state == "COMPLETE" for t in result.trials)
    else:
        assert len(failed) == 1 and "timed out after 3 s (twice" in failed[0].error


def test_the_automatic_timeout_follows_the_measured_evaluations() -> None:
    from nasplat.orchestration.driver import trial_timeout

    assert trial_timeout(30.0, [100.0]) == 30.0  # configured wins
    assert trial_timeout(None, []) == 3600.0  # nothing measured yet
    assert trial_timeout(None, [1.0, 2.0, 50.0]) == 120.0  # the floor
    assert trial_timeout(None, [20.0, 30.0, 40.0]) == 300.0  # 10x the median


def _listening(pids: set[int]) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of the TCP sockets `pids` listen on."""
    inodes: set[str] = set()
    for pid in pids:
        fds = Path(f"/proc/{pid}/fd")
        for fd in fds.iterdir() if fds.is_dir() else ():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                out.append(f[1].split(":")[0])
    return out


@pytest.mark.ray
@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux /proc")
def test_the_embedded_ray_listens_on_the_loopback_only(ray_local) -> None:  # noqa: ANN001
    import ray

    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    node = ray._private.worker._global_node
    assert node.node_ip_address == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    pool = RayEvaluatorPool(AnalyticFactory(str(SPACE)), 1)
    try:
        pids = {p.process.pid for procs in node.all_processes.values() for p in procs} | set(pool.actor_pids())
        addresses = _listening(pids)
    finally:
        pool.close()
    assert addresses, "found no listening socket of Ray's processes"
    assert set(addresses) <= loopback, addresses


@dataclass(frozen=True)
class _BrokenCheckpointFactory:
    """The analytic objective, built only while no file `broken` exists: as an evaluator that
    cannot read its supernet checkpoint (a truncated `checkpoints/latest.pt`) until it is repaired."""

    space_path: str
    broken: str

    def __call__(self):  # noqa: ANN204
        from nasplat.errors import TrainingError
        from nasplat.search.objectives import AnalyticObjective

        if Path(self.broken).exists():
            raise TrainingError("cannot read the checkpoint (truncated?)", source=self.broken)
        return AnalyticObjective(load_space(self.space_path))


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_an_evaluator_that_cannot_start_fails_no_trial_and_the_next_run_evaluates_them(tmp_path: Path, ray_local) -> None:  # noqa: ANN001
    """A machine fault is not a verdict on the arch: the search stops naming the file, no trial
    fails for good, and once the file is repaired the same search evaluates the stopped archs."""
    import ray.cloudpickle

    from nasplat.errors import NasplatError
    from nasplat.store import load_current_study

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    broken = tmp_path / "latest.pt"
    broken.write_bytes(b"PK\x03\x04 cut short")
    factory = _BrokenCheckpointFactory(str(SPACE), str(broken))
    settings = SearchConfig(sampler="random", n_trials=4, budget_gflops=0.1, seed=0, objective="analytic",
                            num_evaluators=2)
    url = f"sqlite:///{tmp_path}/study.db"
    pool = RayEvaluatorPool(factory, 2, max_restarts=3)
    try:
        with pytest.raises(NasplatError, match=r"evaluator cannot start: .*latest\.pt: cannot read the checkpoint"):
            drive(load_space(SPACE), settings, factory, study="broken", storage_url=url, pool=pool)
    finally:
        pool.close()
    stopped = load_current_study(url, "broken").trials()
    assert stopped and all(t.state == "RUNNING" for t in stopped)  # none failed for good
    first = {t.key for t in stopped}

    broken.unlink()  # the checkpoint repaired
    pool = RayEvaluatorPool(factory, 2)
    try:
        result = drive(load_space(SPACE), settings, factory, study="broken", storage_url=url, pool=pool)
    finally:
        pool.close()
    assert result.n_complete == 4 and result.n_failed == 0
    assert first <= {t.key for t in result.trials if t.state == "COMPLETE"}  # the stopped archs were evaluated


def test_a_local_evaluator_that_cannot_start_stops_the_search_and_keeps_the_trial(tmp_path: Path) -> None:
    from nasplat.errors import NasplatError
    from nasplat.store import load_current_study

    broken = tmp_path / "latest.pt"
    broken.write_bytes(b"cut short")
    factory = _BrokenCheckpointFactory(str(SPACE), str(broken))
    settings = SearchConfig(sampler="random", n_trials=3, budget_gflops=0.1, seed=0, objective="analytic")
    url = f"sqlite:///{tmp_path}/study.db"
    with pytest.raises(NasplatError, match=r"latest\.pt: cannot read the checkpoint"):
        drive(load_space(SPACE), settings, factory, study="local", storage_url=url)
    (stopped,) = load_current_study(url, "local").trials()
    assert stopped.state == "RUNNING"
    broken.unlink()
    result = drive(load_space(SPACE), settings, factory, study="local", storage_url=url)
    assert result.n_complete == 3 and result.n_failed == 0
    assert stopped.key in {t.key for t in result.trials if t.state == "COMPLETE"}
