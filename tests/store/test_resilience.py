"""A study database that goes away for a while, is corrupt, is read-only, or holds a value that is
not JSON (`nasplat.store.database`): store operations ride out a server restart or a held SQLite
lock, give up after the retry window with one line naming the redacted URL, and a corrupt,
read-only or unreadable store is one StoreError naming the file, or the study, trial and
attribute.

The PostgreSQL tests start a server of their own (the restart needs its data directory), with
the binaries .ci/run installs; they are skipped where there are none."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import nasplat.store.database as database
from nasplat.errors import StoreError
from nasplat.search import AnalyticObjective
from nasplat.space import load_space
from nasplat.store import ExperimentStateStore, StudyIdentity, load_current_study, open_study
from tests.store.conftest import SPACE, corrupt_sqlite

IDENTITY = StudyIdentity(space_fingerprint="abc", objective="analytic", sampler="random", seed=0, budget_gflops=0.1)


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "BACKOFF_S", (0.01, 0.05))


def _search_steps(url: str, n: int) -> list[tuple[str, str | None, int | None]]:
    """Open the study, record `n` trials (every third failed), reopen, recover; the trials as
    (state, outcome, tell_seq)."""
    space = load_space(SPACE)
    obj = AnalyticObjective(space)
    store = open_study(url, "exp", IDENTITY, space=space)
    store.set_attr("n_trials", n)
    archs = [space.max_arch(), space.min_arch()]
    for i in range(n):
        number = store.start_trial(archs[i % 2], ask_seq=i)
        if i % 3 == 2:
            store.record_attempt(number, "lost", lost=True)
            store.fail_trial(number, "boom", tell_seq=i)
        else:
            store.complete_trial(number, obj.evaluate(archs[i % 2]), tell_seq=i)
    again = open_study(url, "exp", IDENTITY, space=space)
    assert again.recover() == []
    return [(t.state, t.outcome, t.tell_seq) for t in again.trials()]


class _Flaky:
    """The first run of each distinct SQL statement, on any engine, fails as a dropped connection
    does: every kind of statement the store sends fails once, and its retry gets through. Not
    DDL: SQLite (under Python's driver) commits each CREATE at once, so a failure inside
    `create_all` would leave a table without its index, which a server's transactional DDL
    does not."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.failures = 0

    def __call__(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if statement not in self.seen and not statement.lstrip().upper().startswith(("CREATE", "ALTER", "PRAGMA")):
            self.seen.add(statement)
            self.failures += 1
            raise sa.exc.OperationalError(statement, parameters, Exception("server closed the connection unexpectedly"),
                                          connection_invalidated=True)


def test_dropped_connections_are_retried_and_nothing_is_lost(tmp_path, fast_backoff):
    """A connection that drops in the middle of any store operation (Optuna's calls, nasplat's
    own rows, the experiment state): each operation is retried, and the study ends the same as
    one written without a failure."""
    expected = _search_steps(f"sqlite:///{tmp_path}/calm.db", 9)
    flaky = _Flaky()
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", flaky)
    try:
        got = _search_steps(f"sqlite:///{tmp_path}/flaky.db", 9)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", flaky)
    assert flaky.failures >= 10
    assert got == expected


def test_a_database_that_stays_away_is_one_line_naming_it_after_the_window(tmp_path, monkeypatch, fast_backoff):
    monkeypatch.setenv(database.RETRY_ENV, "0.5")
    url = f"sqlite:///{tmp_path}/study.db"
    store = open_study(url, "exp", IDENTITY)

    def always(*args) -> None:  # noqa: ANN002
        raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"),
                                      connection_invalidated=True)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", always)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreError) as err:
            store.trials()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", always)
    assert 0.5 <= time.monotonic() - t0 < 10
    line = str(err.value)
    assert "\n" not in line and line.startswith(url + ": ")
    assert "did not answer for 0.5 s" in line and "the same command resumes" in line


def test_a_sqlite_lock_held_past_the_busy_timeout_is_waited_out(tmp_path, fast_backoff):
    """Another process (a backup, a long read) holding the SQLite file past SQLite's own busy
    timeout (here the URL's 0.1 s): finishing a trial waits for it instead of failing."""
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}?timeout=0.1"
    space = load_space(SPACE)
    store = open_study(url, "exp", IDENTITY, space=space)
    number = store.start_trial(space.max_arch(), ask_seq=0)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, holder.execute, ("COMMIT",))
    release.start()
    try:
        store.complete_trial(number, AnalyticObjective(space).evaluate(space.max_arch()), tell_seq=0)
        store.set_attr("n_trials", 1)
    finally:
        release.join()
        holder.close()
    assert [(t.number, t.state) for t in store.trials()] == [(number, "COMPLETE")]
    assert store.attrs()["n_trials"] == 1


@pytest.mark.parametrize("table, key, what", [
    ("trial_user_attributes", "result", "user attr 'result'"),
    ("trial_system_attributes", "constraints", "system attr 'constraints'"),
])
def test_a_value_optuna_cannot_parse_names_the_study_trial_and_attribute(tmp_path, table, key, what):
    url = f"sqlite:///{tmp_path}/study.db"
    assert _search_steps(url, 3)
    with sqlite3.connect(tmp_path / "study.db") as conn:
        conn.execute(f"UPDATE {table} SET value_json = '{{\"tell_seq\": 1,' "
                     "WHERE key = ? AND trial_id = (SELECT trial_id FROM trials WHERE number = 1)", (key,))
    conn.close()
    with pytest.raises(StoreError) as err:
        load_current_study(url, "exp").trials()
    line = str(err.value)
    assert "\n" not in line and line.startswith(url + ": ")
    assert f"study 'exp': trial 1: {what} is not valid JSON" in line and table in line


@pytest.mark.parametrize("key, value, what", [
    ("arch", '"{\\"body\\": "', "user attr 'arch'"),
    ("result", '"finished"', "user attr 'result'"),
    ("result", '{"tell_seq": 0, "evaluation": {"metrics": {}}}', "user attr 'result'"),
])
def test_a_nasplat_attribute_that_no_longer_parses_names_the_study_and_trial(tmp_path, key, value, what):
    url = f"sqlite:///{tmp_path}/study.db"
    assert _search_steps(url, 3)
    with sqlite3.connect(tmp_path / "study.db") as conn:
        conn.execute("UPDATE trial_user_attributes SET value_json = ? "
                     "WHERE key = ? AND trial_id = (SELECT trial_id FROM trials WHERE number = 0)", (value, key))
    with pytest.raises(StoreError) as err:
        load_current_study(url, "exp").trials()
    line = str(err.value)
    assert "\n" not in line and f"study 'exp': trial 0: {what} cannot be read" in line


def test_a_broken_study_identity_names_the_study(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    open_study(url, "exp", IDENTITY)
    with sqlite3.connect(tmp_path / "study.db") as conn:
        conn.execute("UPDATE study_user_attributes SET value_json = '\"{not json\"' WHERE key = 'identity'")
    for read in (lambda: load_current_study(url, "exp"), lambda: open_study(url, "exp", IDENTITY)):
        with pytest.raises(StoreError, match="study 'exp': user attr 'identity' cannot be read"):
            read()


def _read_only(conn, record) -> None:  # noqa: ANN001 - a pool "connect" hook: SQLite refuses every write
    conn.execute("PRAGMA query_only = ON")


def test_a_read_only_database_is_one_line_naming_the_file(tmp_path):
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    ExperimentStateStore(url).update("exp", phase="trained")
    sa.event.listen(sa.pool.Pool, "connect", _read_only)
    try:
        states = ExperimentStateStore(url)
        with pytest.raises(StoreError) as err:
            states.update("exp", phase="searching")
        states.dispose()
    finally:
        sa.event.remove(sa.pool.Pool, "connect", _read_only)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{db}: ") and "read-only" in line


@pytest.mark.parametrize("table, what", [
    ("trial_user_attributes", "database disk image is malformed"),  # read by Optuna
    ("nasplat_experiment", "database disk image is malformed"),  # read by nasplat
    (None, "file is not a database"),
])
def test_a_corrupt_sqlite_file_is_one_line_naming_it(tmp_path, table, what):
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    assert _search_steps(url, 3)
    corrupt_sqlite(db, table)
    with pytest.raises(StoreError) as err:
        store = load_current_study(url, "exp")
        assert store is not None
        store.trials()
    line = str(err.value)
    assert line == f"{db}: {what} (the SQLite file is corrupt; restore it from a copy or delete it to start over)"


@pytest.mark.parametrize("message, name, line", [
    ("attempt to write a readonly database", "SQLITE_READONLY", "/d/study.db: the database is read-only ("),
    ("attempt to write a readonly database", "SQLITE_READONLY_DIRECTORY", "/d/study.db: the database's folder /d is read-only ("),
    ("database disk image is malformed", "SQLITE_CORRUPT", "/d/study.db: database disk image is malformed (the SQLite"),
    ("file is not a database", "SQLITE_NOTADB", "/d/study.db: file is not a database (the SQLite"),
])
def test_sqlite_errors_found_down_the_exception_chain(message, name, line):
    """Optuna wraps SQLAlchemy's error, which wraps sqlite3's: the line comes from the last."""
    import optuna

    error = sqlite3.OperationalError(message)
    error.sqlite_errorname = name
    try:
        try:
            raise sa.exc.OperationalError("INSERT", {}, error) from error
        except sa.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        found = database.known_error("sqlite:////d/study.db", wrapped)
    assert found is not None and str(found).startswith(line)
    assert database.known_error("postgresql://u:p@h/db", error) is None


def test_every_storage_call_optuna_makes_is_retried():
    """Optuna's cache calls these methods of the RDB storage behind it, some private: each must
    be one that `RetryingRDBStorage` retries. Fails when Optuna changes them."""
    import inspect
    import re

    from optuna.storages import _cached_storage

    called = set(re.findall(r"self\._backend\.(\w+)\(", inspect.getsource(_cached_storage)))
    assert called and called <= set(database.RETRIED_METHODS), called - set(database.RETRIED_METHODS)


# --- a PostgreSQL server of our own -------------------------------------------------------------

def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: [int(p) for p in Path(d).parent.name.split(".")
                                                                         if p.isdigit()])
    return Path(dirs[-1]) if dirs else None


class _Postgres:
    def __init__(self, bin_dir: Path, work: Path) -> None:
        self.bin, self.work = bin_dir, work
        self.data = work / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.password = "Pg-" + os.urandom(6).hex()
        self.user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root
        self.url = f"postgresql://nasplat:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stderr.strip()}")

    def init(self) -> None:
        self.work.chmod(0o755)
        (self.work / "pw").write_text(self.password + "\n")
        if self.user:
            shutil.chown(self.work, self.user)
            shutil.chown(self.work / "pw", self.user)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "nasplat", "-A", "scram-sha-256",
                  f"--pwfile={self.work / 'pw'}")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.work / "log"), "-w", "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.work}", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")


@pytest.fixture(scope="module")
def postgres() -> Iterator[_Postgres]:
    bin_dir = _pg_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("no PostgreSQL server binaries (pg_ctl, initdb) on this machine")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _no_user("postgres")):
        pytest.skip("running as root without a postgres user to run the server as")
    # not under pytest's temporary folder: the server's user must reach it (pytest makes it 0700)
    server = _Postgres(bin_dir, Path(tempfile.mkdtemp(prefix="nasplat-pg.")))
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except RuntimeError:
            pass  # not running
        shutil.rmtree(server.work, ignore_errors=True)


def _no_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return True
    return False


def _fresh_database(url: str) -> str:
    import uuid

    name = f"nasplat_resilience_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_postgres_restarted_mid_search_loses_nothing(postgres, monkeypatch):
    """The server stops (its connections are terminated) and comes back 10 s later while trials
    are being started and finished: every operation completes, each trial once. (10 s outlasts
    the up to 8 s that Optuna's own retries of a trial's creation may wait.)"""
    monkeypatch.setenv(database.RETRY_ENV, "60")
    url = _fresh_database(postgres.url)
    space = load_space(SPACE)
    obj = AnalyticObjective(space)
    store = open_study(url, "exp", IDENTITY, space=space)

    down: list[float] = []  # when the server was down: (stopped, about to start)

    def bounce() -> None:
        time.sleep(1.0)
        postgres.stop("fast")
        down.append(time.monotonic())
        time.sleep(10.0)
        down.append(time.monotonic())
        postgres.start()

    thread = threading.Thread(target=bounce)
    thread.start()
    done: list[int] = []
    spans: list[tuple[float, float]] = []  # when each trial was started and finished
    after = 0
    try:
        while thread.is_alive() or after < 3:  # until the server is back, and three trials more
            after += not thread.is_alive()
            i = len(done)
            arch = (space.max_arch(), space.min_arch())[i % 2]
            t0 = time.monotonic()
            number = store.start_trial(arch, ask_seq=i)
            store.complete_trial(number, obj.evaluate(arch), tell_seq=i)
            spans.append((t0, time.monotonic()))
            done.append(number)
            time.sleep(0.05)
    finally:
        thread.join()
    assert any(t0 <= down[1] and t1 >= down[0] for t0, t1 in spans)  # a trial was recorded while it was down
    trials = open_study(url, "exp", IDENTITY, space=space).trials()
    assert [t.number for t in trials] == done
    assert all(t.state == "COMPLETE" for t in trials) and [t.tell_seq for t in trials] == list(range(len(done)))


@pytest.mark.postgres
def test_postgres_down_past_the_retry_window_is_one_line(postgres, monkeypatch):
    monkeypatch.setenv(database.RETRY_ENV, "2")
    url = _fresh_database(postgres.url)
    store = open_study(url, "exp", IDENTITY)
    postgres.stop("fast")
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError) as err:
            store.trials()
        assert 2.0 <= time.monotonic() - t0 < 30
        with pytest.raises(StoreError) as again:
            open_study(url, "exp", IDENTITY)
    finally:
        postgres.start()
    for e in (err.value, again.value):
        line = str(e)
        assert e.__cause__ is None  # the driver's exception (with the URL) is not chained
        assert "\n" not in line and postgres.password not in line, line
        assert line.startswith(f"postgresql://nasplat:***@127.0.0.1:{postgres.port}/"), line
        assert "did not answer for 2 s" in line and "the same command resumes" in line, line
    assert [t.state for t in open_study(url, "exp", IDENTITY).trials()] == []  # back, and resumes
