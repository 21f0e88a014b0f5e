"""One driver per experiment at a time: a lease kept in the study store.

Two drivers on one experiment duplicate or lose work: both train into the same checkpoints, both
search the same study (every trial twice, or one marking the other's running trial as killed),
both create the MLflow database at once. On a cluster a job retry can start a second driver while
the first still runs. So every command that writes (`run`, `train`, `search`, `retrain`) first
takes the experiment's lease, a row of `nasplat_lease` in the study database (the place every
driver of the experiment shares, SQLite or PostgreSQL alike), before it writes anything else:

For a database server (PostgreSQL: drivers on several hosts) the lease is a row of
`nasplat_lease` in the study database:

- no row, or a row whose holder is dead: it is ours (one conditional write, so of two drivers
  that try at once exactly one wins);
- a row whose holder is alive: the command stops with one line naming the holder ("experiment E
  is being run by pid P on host H since T; it is alive"), exit 2, having written nothing.

A holder is alive while its heartbeat (written every `HEARTBEAT_S` by a daemon thread) is younger
than the grace period (`GRACE_S`, or `$NASPLAT_LEASE_GRACE_S`); on the holder's own host a pid that
no longer exists is dead at once. A driver killed with SIGKILL or lost with its node thus loses
its lease after the grace period, and the next run takes it over and recovers the trials it left
running, as before. The holder deletes its row when it ends (normally, on an error or on Ctrl-C).
Heartbeats compare clocks across hosts: they must agree to well within the grace period (NTP).

A SQLite study lives on the driver's disk, and all its drivers on that host: there the lease is an
exclusive `flock` on the file `<database>.lease` beside it (holding the holder's pid, host, start
and command for the message), which the kernel releases the moment its holder dies, and the study
database itself is not written (a rerun of a finished search still writes nothing to it).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from collections.abc import Callable
from typing import IO

import sqlalchemy as sa

from nasplat.errors import StoreError
from nasplat.store.database import create_engine, failure_reason, retrying, store_error
from nasplat.store.redact import redact_url
from nasplat.store.study import _ensure_sqlite_dir

log = logging.getLogger(__name__)

GRACE_S = 60.0  # a heartbeat older than this is a dead driver's
HEARTBEAT_S = 10.0
GRACE_ENV = "NASPLAT_LEASE_GRACE_S"

_metadata = sa.MetaData()
_lease_table = sa.Table(
    "nasplat_lease",
    _metadata,
    sa.Column("experiment", sa.String(512), primary_key=True),
    sa.Column("token", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("command", sa.Text),
    sa.Column("since", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds an experiment's lease, as its row says."""

    host: str
    pid: int
    since: float
    heartbeat: float
    command: str | None = None

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec="seconds")
        return f"pid {self.pid} on host {self.host} since {since}"


def grace_s() -> float:
    """The grace period: `$NASPLAT_LEASE_GRACE_S`, else `GRACE_S`."""
    try:
        value = float(os.environ.get(GRACE_ENV, GRACE_S))
    except ValueError:
        return GRACE_S
    return value if value > 0 else GRACE_S


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def holder_alive(holder: LeaseHolder, *, now: float, grace: float, host: str) -> bool:
    """A holder on this host is alive while its pid exists and its heartbeat is fresh; elsewhere
    while its heartbeat is younger than `grace`."""
    if holder.host == host and not _pid_exists(holder.pid):
        return False
    return now - holder.heartbeat < grace


class ExperimentLease:
    """The lease of `experiment` in the study database at `url`: `acquire()` (or `with`), a
    heartbeat thread while held, `release()`; `row=True` keeps it as a row even for SQLite. `lost` is set when another driver took it over
    (this one stalled past the grace period), and then `on_lost(lease)` is called from the
    heartbeat thread (the CLI stops the command with it). Raises StoreError (URL redacted)."""

    def __init__(self, url: str, experiment: str, *, source: str | None = None, grace: float | None = None,
                 heartbeat_s: float = HEARTBEAT_S, command: str | None = None, row: bool | None = None,
                 on_lost: Callable[["ExperimentLease"], None] | None = None) -> None:
        self.on_lost = on_lost
        self.url, self.experiment, self.source = url, experiment, source
        self.grace = grace if grace is not None else grace_s()
        self.heartbeat_s = min(heartbeat_s, self.grace / 3)
        self.command = command if command is not None else " ".join(os.path.basename(a) if i == 0 else a
                                                                    for i, a in enumerate(sys.argv))[:1000]
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.lost = threading.Event()
        self.took_over: LeaseHolder | None = None  # the dead driver whose lease this one took
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine: sa.engine.Engine | None = None
        self._file: IO[str] | None = None
        self._row = row  # None: a lock file for a SQLite file, a row for a server; True: a row anyway

    # --- a SQLite study: a lock file beside it ---------------------------------------------------
    def _lock_path(self) -> Path | None:
        """`<database>.lease` for a SQLite file; None for a server (or an in-memory database)."""
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() != "sqlite":
            return None
        db = url.database
        return None if not db or db == ":memory:" else Path(db).expanduser().resolve().with_name(Path(db).name + ".lease")

    def _acquire_file(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
        except OSError as e:
            raise StoreError(f"cannot open the lease file {path}: {e.strerror}", source=self.source,
                             key="search.storage") from e
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                info = json.loads(handle.read() or "{}")
                holder = LeaseHolder(str(info["host"]), int(info["pid"]), float(info["since"]), float(info["since"]),
                                     info.get("command"))
                who = holder.describe() + (f" ({holder.command})" if holder.command else "")
            except (ValueError, KeyError, TypeError):
                who = "another process"
            handle.close()
            raise StoreError(f"experiment {self.experiment!r} is being run by {who}; it is alive (it holds {path}). "
                             "Wait for it, or stop it", source=self.source, key="search.storage") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": self.host, "pid": os.getpid(), "since": time.time(),
                                 "command": self.command, "experiment": self.experiment}))
        handle.flush()
        self._file = handle

    # --- a database server: a row with a heartbeat ------------------------------------------------
    def _open(self) -> sa.engine.Engine:
        if self._engine is None:
            try:
                _ensure_sqlite_dir(self.url)
                engine = create_engine(self.url)
                for attempt in range(3):  # two drivers creating the table at once: one sees it made
                    try:
                        retrying(self.url, lambda _: _metadata.create_all(engine))
                        break
                    except sa.exc.OperationalError as e:
                        if "already exists" not in str(e) or attempt == 2:
                            raise
                self._engine = engine
            except Exception as e:  # noqa: BLE001 - any driver error becomes one redacted StoreError
                raise store_error(self.url, "cannot open the study database", e) from None
        return self._engine

    def holder(self) -> LeaseHolder | None:
        """The current holder, or None."""
        def read(_: int) -> sa.RowMapping | None:
            with self._open().connect() as conn:
                return conn.execute(sa.select(_lease_table).where(_lease_table.c.experiment == self.experiment)).mappings().first()

        row = retrying(self.url, read)
        return None if row is None else LeaseHolder(row["host"], int(row["pid"]), float(row["since"]),
                                                    float(row["heartbeat"]), row["command"])

    def acquire(self) -> None:
        """Take the lease, or raise StoreError naming the live holder. A dead holder's lease is
        taken over (`took_over` says whose)."""
        lock = None if self._row else self._lock_path()
        if lock is not None:
            self._acquire_file(lock)
            return
        t = _lease_table

        def attempt(now: float) -> tuple[bool, LeaseHolder | None]:
            """One round in one transaction: (whether the lease is now ours, the dead holder taken over)."""
            mine = {"token": self.token, "host": self.host, "pid": os.getpid(), "command": self.command,
                    "since": now, "heartbeat": now}
            with self._open().begin() as conn:
                row = conn.execute(sa.select(t).where(t.c.experiment == self.experiment)).mappings().first()
                if row is None:
                    conn.execute(t.insert().values(experiment=self.experiment, **mine))
                    return True, None
                if row["token"] == self.token:  # a retried round whose first try committed
                    return True, None
                holder = LeaseHolder(row["host"], int(row["pid"]), float(row["since"]), float(row["heartbeat"]),
                                     row["command"])
                if holder_alive(holder, now=now, grace=self.grace, host=self.host):
                    raise StoreError(
                        f"experiment {self.experiment!r} is being run by {holder.describe()}"
                        + (f" ({holder.command})" if holder.command else "")
                        + f"; it is alive (heartbeat {max(0.0, now - holder.heartbeat):.0f} s ago). "
                        f"Wait for it, or stop it; a driver that died loses the lease after {self.grace:g} s",
                        source=self.source, key="search.storage")
                taken = conn.execute(t.update().where(t.c.experiment == self.experiment, t.c.token == row["token"])
                                     .values(**mine))
                return taken.rowcount == 1, holder

        for _ in range(20):  # each round either decides or lost a race that changed the row
            try:
                won, dead = retrying(self.url, lambda _: attempt(time.time()))
            except StoreError:
                raise
            except sa.exc.IntegrityError:
                continue  # another driver inserted the row first: look again
            except sa.exc.OperationalError as e:
                if "locked" not in str(e):  # SQLite: another driver's write came first
                    raise store_error(self.url, "cannot take the experiment's lease", e) from None
                time.sleep(0.2)
                continue
            except Exception as e:  # noqa: BLE001 - one redacted line
                raise store_error(self.url, "cannot take the experiment's lease", e) from None
            if won:
                if dead is not None:
                    self.took_over = dead
                    log.warning("took over the lease of experiment %r from a driver that is gone (%s, last "
                                "heartbeat %.0f s ago)", self.experiment, dead.describe(), time.time() - dead.heartbeat)
                self._start()
                return
        raise StoreError(f"could not take the lease of experiment {self.experiment!r}: the database stayed busy",
                         source=redact_url(self.url))

    def _beat(self) -> bool:
        """Refresh the heartbeat; False when the row is no longer ours."""
        t = _lease_table
        with self._open().begin() as conn:
            res = conn.execute(t.update().where(t.c.experiment == self.experiment, t.c.token == self.token)
                               .values(heartbeat=time.time()))
            return res.rowcount == 1

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if not self._beat():
                    self.lost.set()
                    log.debug("experiment %r: another driver took over this driver's lease", self.experiment)
                    if self.on_lost is not None:
                        self.on_lost(self)
                    return
            except Exception as e:  # noqa: BLE001 - a database hiccup: the next beat tries again
                # one line on the console (a server restarting is expected); the traceback to the log file
                log.warning("experiment %r: the lease heartbeat failed (%s); retrying", self.experiment,
                            failure_reason(e, self.url))
                log.debug("the lease heartbeat failed", exc_info=True)

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True, name="nasplat-lease")
        self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and delete the row if it is still ours (or unlock the file)."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()  # the file stays: unlinking a lock file races with the next taker
            self._file.close()  # closing releases the flock
            self._file = None
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._engine is None:
            return
        try:
            with self._engine.begin() as conn:
                t = _lease_table
                conn.execute(t.delete().where(t.c.experiment == self.experiment, t.c.token == self.token))
        except Exception as e:  # noqa: BLE001 - the grace period frees it anyway
            log.warning("could not release the lease of experiment %r (%s); the next run takes it over after %g s",
                        self.experiment, failure_reason(e, self.url), self.grace)
            log.debug("could not release the lease", exc_info=True)
        finally:
            self._engine.dispose()
            self._engine = None

    def lost_message(self) -> str:
        """The one line of a driver whose lease another driver took over."""
        return (f"experiment {self.experiment!r}: another driver took over this run's lease (its heartbeat did not "
                f"reach the study database for {self.grace:g} s); this run stopped so that only one writes")

    def __enter__(self) -> "ExperimentLease":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


__all__ = ["GRACE_ENV", "GRACE_S", "HEARTBEAT_S", "ExperimentLease", "LeaseHolder", "grace_s", "holder_alive"]
