"""How the store talks to its database: engines, retries, and one line for a database that is
away, corrupt, read-only or holds a value that is not JSON.

- Engines (`create_engine`, and Optuna's through `engine_kwargs`) test a pooled connection
  before using it (`pool_pre_ping`: a server that restarted leaves dead connections in the pool)
  and give up connecting to a server after `CONNECT_TIMEOUT_S` (libpq would wait for ever on a
  host that drops packets). A SQLite file has no connection to lose: it gets no pre-ping, and
  waits `SQLITE_BUSY_S` for a lock another process holds.
- Every store operation (each Optuna storage call, through `RetryingRDBStorage`, and each of
  the store's own transactions, through `retrying`) is retried with backoff while it fails at
  the connection level: a PostgreSQL server that restarts, fails over or drops its connections,
  or a SQLite file another process keeps locked past `SQLITE_BUSY_S`. After `retry_window_s()`
  (`$NASPLAT_DB_RETRY_S`, default 60 s) it gives up with a StoreError naming the redacted URL.
  Nothing is lost: the same command resumes, as after a killed driver (a trial whose result was
  not recorded is evaluated again). An operation is one transaction, so a retry repeats one that
  did not commit; where the server committed and the connection dropped before it said so,
  finishing a trial (its rows, its state) is idempotent, and a trial started twice leaves one
  RUNNING trial that the next resume marks killed (its arch is not evaluated again).
- A SQLite file that is corrupt or not a database, or that cannot be written (a read-only file,
  folder or mount), is one StoreError naming the file.
- A stored value that is not JSON (Optuna then cannot read the study at all) is one StoreError
  naming the study, the trial, the attribute and the table to repair.

`RetryingRDBStorage` retries, besides the public storage API, the private methods Optuna's
cache calls on the storage behind it (`RETRIED_METHODS`); a test fails when Optuna's cache calls
one that is not listed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.trial import TrialState

from nasplat.errors import NasplatError, StoreError
from nasplat.store.redact import redact_text, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_ENV = "NASPLAT_DB_RETRY_S"
RETRY_S = 60.0  # how long a store operation waits for its database to answer again
CONNECT_TIMEOUT_S = 10  # one connection attempt to a database server
SQLITE_BUSY_S = 5.0  # SQLite's own wait for a lock (Python's default), before the retries
BACKOFF_S = (0.5, 5.0)  # the first wait between attempts, and the longest (doubling between)

CORRUPT_ADVICE = "the SQLite file is corrupt; restore it from a copy or delete it to start over"

# Messages of a connection that failed or dropped (libpq/psycopg, MySQL drivers): a server that is
# down, restarting, failing over or unreachable for now. Authentication or a missing database
# are not among them: retrying those cannot help.
_DISCONNECT_MARKERS = (
    "connection refused", "could not connect", "server closed the connection", "connection timeout expired",
    "timeout expired", "terminating connection", "the database system is starting up",
    "the database system is shutting down", "the database system is in recovery mode",
    "the database system is not yet accepting connections", "consuming input failed", "connection not open",
    "connection is closed", "connection already closed", "the connection is lost", "no connection to the server",
    "could not receive data", "could not send data", "ssl syscall error", "ssl connection has been closed",
    "connection reset", "broken pipe", "network is unreachable", "no route to host",
    "could not translate host name", "temporary failure in name resolution", "too many clients",
    "server has gone away", "lost connection", "can't connect",
)
_DISCONNECT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")  # connection exception, shutdown, too many


def retry_window_s() -> float:
    """How long an operation retries: `$NASPLAT_DB_RETRY_S`, else `RETRY_S` (0: no retries)."""
    try:
        value = float(os.environ.get(RETRY_ENV, RETRY_S))
    except ValueError:
        return RETRY_S
    return value if value >= 0 else RETRY_S


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL (as written in it), else None."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database


def engine_kwargs(url: str) -> dict[str, Any]:
    """`create_engine` keyword arguments for the study database at `url` (see the module doc)."""
    parsed = sa.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return {} if "timeout" in parsed.query else {"connect_args": {"timeout": SQLITE_BUSY_S}}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in parsed.query:
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def create_engine(url: str) -> sa.engine.Engine:
    """An engine for the study database at `url`, with `engine_kwargs(url)`."""
    return sa.create_engine(url, **engine_kwargs(url))


def _chain(e: BaseException) -> Iterator[BaseException]:
    """`e`, its causes and contexts, and the driver errors SQLAlchemy wrapped (`.orig`)."""
    seen: set[int] = set()
    todo: list[BaseException] = [e]
    while todo:
        x = todo.pop(0)
        if id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [c for c in (getattr(x, "orig", None), x.__cause__, x.__context__) if isinstance(c, BaseException)]


def _sqlite_error(e: BaseException) -> sqlite3.Error | None:
    return next((x for x in _chain(e) if isinstance(x, sqlite3.Error)), None)


def _transient(e: BaseException) -> bool:
    """Whether `e` failed at the connection level (see the module doc), so that trying the same
    operation again later can succeed."""
    for x in _chain(e):
        if isinstance(x, sqlite3.Error):
            name = getattr(x, "sqlite_errorname", "")
            return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in str(x)
        if isinstance(x, sa.exc.DisconnectionError):
            return True
        if isinstance(x, sa.exc.DBAPIError) and x.connection_invalidated:
            return True
        if isinstance(x, (sa.exc.OperationalError, sa.exc.InterfaceError)) and not isinstance(x.orig, sqlite3.Error):
            # a server's driver: by SQLSTATE where it has one, else by message (a failed connect has none)
            state = str(getattr(x.orig, "sqlstate", None) or getattr(x.orig, "pgcode", None) or "")
            text = str(x.orig).lower()
            if state.startswith(_DISCONNECT_SQLSTATES) or any(m in text for m in _DISCONNECT_MARKERS):
                return True
    return False


def failure_reason(e: BaseException, url: str) -> str:
    """The first line of the driver's own message (under SQLAlchemy's and Optuna's), redacted."""
    wrappers = (sa.exc.SQLAlchemyError, optuna.exceptions.OptunaError)
    inner = next((x for x in _chain(e) if not isinstance(x, wrappers)), e)
    text = str(inner).strip() or type(inner).__name__
    return redact_text(text.splitlines()[0].strip(), url)


def known_error(url: str, e: BaseException) -> StoreError | None:
    """The one line for a SQLite file that is corrupt, not a database, on a full disk or read-only,
    else None."""
    error = _sqlite_error(e)
    path = sqlite_file(url)
    if error is None or path is None:
        return None
    name, text = getattr(error, "sqlite_errorname", ""), str(error)
    if name.startswith("SQLITE_NOTADB") or "file is not a database" in text:
        return StoreError(f"file is not a database ({CORRUPT_ADVICE})", source=path)
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return StoreError(f"database disk image is malformed ({CORRUPT_ADVICE})", source=path)
    if name.startswith("SQLITE_FULL") or "database or disk is full" in text:
        return StoreError("no space left on the device for the study database (what was written is kept: free "
                          "space there, or set search.storage to another place, and the same command resumes)",
                          source=path)
    if name == "SQLITE_READONLY_DIRECTORY":
        return StoreError(f"the database's folder {Path(path).parent} is read-only (SQLite writes a journal "
                          "beside the database; make the folder writable, or set search.storage to a writable place)",
                          source=path)
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StoreError("the database is read-only (attempt to write a readonly database; make the file and its "
                          "folder writable, or set search.storage to a writable place)", source=path)
    return None


def store_error(url: str, what: str, e: BaseException) -> StoreError:
    """The one redacted line for a failed store operation: `known_error` when it is one, else
    `<url>: <what>: <the driver's message>`."""
    if isinstance(e, StoreError):
        return e
    text = redact_text(str(e).splitlines()[0] if str(e) else type(e).__name__, url)
    return known_error(url, e) or StoreError(f"{what}: {text}", source=redact_url(url))


_away: dict[str, float] = {}  # URL -> when an operation last gave up on it


def retrying(url: str, operation: Callable[[int], T]) -> T:
    """`operation(attempt)` (attempt 0, 1, ...), tried again with backoff while it fails at the
    connection level, for up to `retry_window_s()`. A NasplatError, and any failure not at the
    connection level, passes unchanged, but for `known_error`'s: those become its StoreError.
    Raises StoreError (URL redacted) when the database stays away for the whole window.

    An operation should be one transaction: one that commits a transaction and then fails in a
    second would repeat the first. An operation nested in another retries on its own, so the
    outer one does not repeat what the inner one committed.

    Once an operation has given up on a database, the next ones (recording what the failed
    command cost, releasing its lease) give up at their first failure instead of waiting again;
    the first that succeeds ends that."""
    window = retry_window_s()
    start = time.monotonic()
    delay, longest = BACKOFF_S
    attempt = 0
    while True:
        try:
            result = operation(attempt)
        except NasplatError:
            raise
        except Exception as e:
            if not _transient(e):
                known = known_error(url, e)
                if known is not None:
                    raise known from None  # the driver's exception may hold the URL
                raise
            waited = time.monotonic() - start
            if waited >= window or url in _away:
                _away[url] = time.monotonic()
                raise StoreError(
                    f"the study database did not answer for {window:g} s ({failure_reason(e, url)}); nothing is "
                    f"lost: the same command resumes once it answers (${RETRY_ENV} sets how long to wait)",
                    source=redact_url(url)) from None
            if attempt == 0:
                log.warning("the study database %s does not answer (%s); retrying for up to %g s",
                            redact_url(url), failure_reason(e, url), window)
            time.sleep(min(delay, max(0.0, window - waited)))
            delay = min(delay * 2, longest)
            attempt += 1
            continue
        if attempt:
            log.warning("the study database %s answers again (after %.0f s)", redact_url(url), time.monotonic() - start)
        _away.pop(url, None)
        return result


# --- Optuna's storage -----------------------------------------------------------------------------

_JSON_COLUMNS = (  # the JSON values Optuna reads: (table, key column, JSON column, what, owner: trial | study)
    ("trial_user_attributes", "key", "value_json", "user attr", "trial"),
    ("trial_system_attributes", "key", "value_json", "system attr", "trial"),
    ("trial_params", "param_name", "distribution_json", "the distribution of param", "trial"),
    ("study_user_attributes", "key", "value_json", "user attr", "study"),
    ("study_system_attributes", "key", "value_json", "system attr", "study"),
)


def _bad_json(engine: sa.engine.Engine, url: str) -> StoreError | None:
    """The first stored attribute value that is not JSON, as a StoreError naming the study, the
    trial and the table; None when there is none (or the tables are not Optuna's as known)."""
    try:
        with engine.connect() as conn:
            for table, key, column, what, owner in _JSON_COLUMNS:
                if owner == "trial":
                    query = (f"SELECT s.study_name, t.number, a.{key}, a.{column} FROM {table} a "
                             "JOIN trials t ON a.trial_id = t.trial_id JOIN studies s ON t.study_id = s.study_id "
                             f"ORDER BY s.study_id, t.number, a.{key}")
                else:
                    query = (f"SELECT s.study_name, NULL, a.{key}, a.{column} FROM {table} a "
                             f"JOIN studies s ON a.study_id = s.study_id ORDER BY s.study_id, a.{key}")
                for study, number, name, value in conn.execute(sa.text(query)):
                    try:
                        json.loads(value)
                    except (TypeError, ValueError) as e:
                        where = f"study {study!r}: " + (f"trial {number}: " if number is not None else "")
                        return StoreError(
                            f"{where}{what} {name!r} is not valid JSON ({e}); the study cannot be read: repair or "
                            f"delete that row of table {table}, or start a new study with --new-study",
                            source=redact_url(url))
    except sa.exc.SQLAlchemyError:
        return None
    return None


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        try:
            return retrying(self.url, lambda _: method(self, *args, **kwargs))
        except json.JSONDecodeError as e:
            bad = _bad_json(self.engine, self.url)
            if bad is None:
                raise
            raise bad from e

    return call


class RetryingRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every call is `retrying` (see the module doc), and whose read
    of a value that is not JSON is one StoreError naming it."""

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Optuna's, made idempotent for a retry: a trial that the failed attempt did finish (the
        server committed, the answer was lost) in this state is not finished twice."""
        base = optuna.storages.RDBStorage

        def attempt(n: int) -> bool:
            if n and state.is_finished() and base.get_trial(self, trial_id).state == state:
                return True
            return base.set_trial_state_values(self, trial_id, state, values)

        return retrying(self.url, attempt)


# The public storage API, and the private methods Optuna's cache (`_CachedStorage`) calls.
RETRIED_METHODS = tuple(sorted(
    {n for n, v in vars(optuna.storages.RDBStorage).items() if callable(v) and not n.startswith("_")}
    | {"_create_new_trial", "_get_trials", "_set_trial_param", "_get_best_trial_id", "_get_stale_trial_ids"}
))
for _name in RETRIED_METHODS:
    if _name not in vars(RetryingRDBStorage):
        setattr(RetryingRDBStorage, _name, _retried(_name))


def open_rdb_storage(url: str) -> RetryingRDBStorage:
    """Optuna's RDB storage at `url` with this module's engine and retries. Raises StoreError
    (URL redacted)."""
    def attempt(n: int) -> RetryingRDBStorage:
        return RetryingRDBStorage(url, engine_kwargs=engine_kwargs(url), skip_compatibility_check=False)

    try:
        return retrying(url, attempt)
    except StoreError:
        raise
    except Exception as e:  # noqa: BLE001 - any driver error becomes one redacted StoreError
        raise store_error(url, "cannot open the study database", e) from None


__all__ = ["CONNECT_TIMEOUT_S", "RETRIED_METHODS", "RETRY_ENV", "RETRY_S", "RetryingRDBStorage", "create_engine",
           "engine_kwargs", "failure_reason", "known_error", "open_rdb_storage", "retry_window_s", "retrying",
           "sqlite_file", "store_error"]
