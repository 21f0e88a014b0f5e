"""One driver per experiment (`nasplat.store.lease`): a second driver is refused with one line
naming the live one, a dead driver's lease is taken over, on SQLite (a lock file) and on a
database server (a row with a heartbeat; PostgreSQL when NASPLAT_TEST_POSTGRES_URL is set, the
same code on SQLite otherwise), and two `nasplat search` started together run the study once."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from nasplat.errors import StoreError
from nasplat.store.lease import ExperimentLease, LeaseHolder, holder_alive


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sqlite_a_second_driver_is_refused_naming_the_first_and_the_study_is_not_written(tmp_path):
    url = f"sqlite:///{tmp_path}/out/study.db"
    first = ExperimentLease(url, "exp", source="exp.yaml", command="nasplat run exp.yaml")
    first.acquire()
    try:
        with pytest.raises(StoreError) as err:
            ExperimentLease(url, "exp", source="exp.yaml").acquire()
        line = str(err.value)
        assert line.startswith("exp.yaml: search.storage: experiment 'exp' is being run by ")
        assert f"pid {os.getpid()} on host {socket.gethostname()} since " in line and "it is alive" in line
        assert "(nasplat run exp.yaml)" in line and "\n" not in line
    finally:
        first.release()
    assert not (tmp_path / "out" / "study.db").exists()  # the lease is beside the study, not in it
    with ExperimentLease(url, "exp"):  # released: the next driver takes it
        pass


def test_sqlite_a_killed_driver_frees_the_lease_at_once(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    code = (f"from nasplat.store.lease import ExperimentLease; import time, sys\n"
            f"lease = ExperimentLease({url!r}, 'exp'); lease.acquire(); print('held', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=f"pid {proc.pid} "):
            ExperimentLease(url, "exp").acquire()
    finally:
        proc.kill()
        proc.wait()
    with ExperimentLease(url, "exp"):  # SIGKILL: the kernel dropped its lock
        pass


@pytest.fixture(params=["sqlite-row", "postgres"])
def server_url(request, tmp_path) -> str:
    if request.param == "postgres":
        url = os.environ.get("NASPLAT_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("NASPLAT_TEST_POSTGRES_URL is not set")
        return url
    return f"sqlite:///{tmp_path}/study.db"


def test_row_lease_refuses_a_live_holder_and_takes_over_a_dead_one(server_url):
    name = f"lease-{uuid.uuid4().hex[:8]}"
    first = ExperimentLease(server_url, name, row=True, grace=30, heartbeat_s=0.2)
    first.acquire()
    try:
        with pytest.raises(StoreError, match="it is alive"):
            ExperimentLease(server_url, name, row=True, grace=30).acquire()
        before = first.holder()
        time.sleep(0.6)
        assert first.holder().heartbeat > before.heartbeat  # the heartbeat thread keeps it fresh
    finally:
        first.release()
    assert first.holder() is None

    # a holder on another host whose heartbeat stopped 31 s ago (a lost node): taken over
    gone = ExperimentLease(server_url, name, row=True, grace=30, heartbeat_s=3600)
    gone.host = "lost-node"
    gone.acquire()
    gone._stop.set()
    from nasplat.store.lease import _lease_table

    with gone._open().begin() as conn:
        conn.execute(_lease_table.update().where(_lease_table.c.experiment == name).values(heartbeat=time.time() - 31))
    taker = ExperimentLease(server_url, name, row=True, grace=30, heartbeat_s=0.2)
    taker.acquire()
    try:
        assert taker.took_over is not None and taker.took_over.host == "lost-node"
        assert gone._beat() is False  # the old holder learns it lost the lease
    finally:
        taker.release()
        gone._engine.dispose()


def test_row_lease_two_drivers_at_once_exactly_one_wins(server_url):
    name = f"race-{uuid.uuid4().hex[:8]}"
    leases = [ExperimentLease(server_url, name, row=True, grace=30) for _ in range(4)]
    outcome: list[str] = []
    start = threading.Barrier(len(leases))

    def take(lease: ExperimentLease) -> None:
        start.wait()
        try:
            lease.acquire()
            outcome.append("won")
        except StoreError as e:
            outcome.append("refused" if "it is alive" in str(e) else str(e))

    threads = [threading.Thread(target=take, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for lease in leases:
        lease.release()
    assert sorted(outcome) == ["refused", "refused", "refused", "won"], outcome


def test_a_holder_on_this_host_whose_pid_is_gone_is_dead_whatever_its_heartbeat():
    now = time.time()
    here = socket.gethostname()
    assert not holder_alive(LeaseHolder(here, _dead_pid(), now, now), now=now, grace=60, host=here)
    assert holder_alive(LeaseHolder(here, os.getpid(), now, now), now=now, grace=60, host=here)
    assert holder_alive(LeaseHolder("elsewhere", 1, now, now - 59), now=now, grace=60, host=here)
    assert not holder_alive(LeaseHolder("elsewhere", 1, now, now - 61), now=now, grace=60, host=here)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_searches_started_together_run_the_study_once(tmp_path, tiny_experiment):
    """The first `nasplat search` holds the lease; the second, started while it runs, exits 2
    with one line and writes nothing; the study ends with its budget once."""
    path = tiny_experiment(tmp_path / "two")
    path.write_text(path.read_text() + "search: {sampler: random, n_trials: 12, num_evaluators: 1, "
                                       "objective: analytic}\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "nasplat", "search", str(path), "--no-mlflow"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lock = tmp_path / "two" / "out" / "study.db.lease"
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text()):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first search never took the lease"
        time.sleep(0.1)
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 2, second.stderr
    (line,) = second.stderr.strip().splitlines()
    assert f"{path}: search.storage: experiment 'tiny' is being run by pid {first.pid} on host " in line, line
    with sqlite3.connect(tmp_path / "two" / "out" / "study.db") as conn:
        states = [s for (s,) in conn.execute("SELECT state FROM trials")]
        seqs = [v for (v,) in conn.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'result'")]
    assert states.count("COMPLETE") == 12 and len(states) == 12
    assert len(seqs) == len(set(seqs)) == 12  # every result told once


def test_a_driver_whose_lease_was_taken_over_stops_in_one_line(server_url):
    """This driver stalled past the grace period and another took its lease: the heartbeat finds
    the row gone and the command stops (exit 2, one line), instead of two drivers writing."""
    name = f"lease-{uuid.uuid4().hex[:8]}"
    code = (
        "import sys, time, typer\n"
        "from nasplat.cli import lease as cli_lease, main as m\n"
        "from nasplat.store.lease import ExperimentLease\n"
        "def command():\n"
        f"    lease = ExperimentLease({server_url!r}, {name!r}, grace=0.6, heartbeat_s=0.1, row=True,\n"
        "                            on_lost=cli_lease.stop_command)\n"
        "    lease.acquire()\n"
        "    cli_lease._held.append(lease)\n"
        "    print('held', flush=True)\n"
        "    time.sleep(120)\n"
        "try:\n"
        "    m._guard(command)()\n"
        "except typer.Exit as e:\n"
        "    sys.exit(e.exit_code)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        # another driver takes the lease over (as after this one missed its heartbeats)
        import sqlalchemy as sa

        engine = sa.create_engine(server_url)
        with engine.begin() as conn:
            taken = conn.execute(sa.text("UPDATE nasplat_lease SET token = 'another-driver' WHERE experiment = :e"),
                                 {"e": name}).rowcount
        engine.dispose()
        assert taken == 1
        try:
            code_ = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("still running a minute after its lease was taken over: " + proc.stderr.read()) from None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code_ == 2, err
    assert err.strip().splitlines()[-1] == (
        f"nasplat: error: experiment {name!r}: another driver took over this run's lease (its heartbeat did not reach "
        "the study database for 0.6 s); this run stopped so that only one writes")
