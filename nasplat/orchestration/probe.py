"""Preflight: everything a command needs is checked before it draws a bar or writes a file.

`preflight(experiment, ...)` runs right after `cluster.for_command` in `nasplat run`, `train` and
`search`. It checks, each with a bounded timeout (`timeout_s`, default 5 s), that the services the
command will talk to answer: the tracking server (an `http(s)://` tracking URI: its `/health`),
the study database when it is a server (a TCP connection to its host and port, then `SELECT 1`
under the same timeout), and the Ray
cluster (`cluster.address` as `host:port` or `ray://host:port`: a TCP connection), and the
storage root (`storage_path`) when it is an object store or a folder other than the output
directory: a probe object written, read back and deleted (`Storage.probe`, `storage.PROBE_TIMEOUT_S`;
no such bucket, wrong credentials and an endpoint that is down or silent are each one line). It also
rejects, before anything is opened, an unknown `--objective` and a GFLOPs budget (on the total
or a part) below the smallest subnet of the space. Every failure is one ConfigError naming the
experiment file, the key and the address (password redacted).

A probe proves reachability, not that the service will accept the command's requests; those
errors still come later, as StoreError / NasplatError lines.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from nasplat.config import Experiment
from nasplat.errors import BudgetError, ConfigError, StorageError
from nasplat.storage import PROBE_TIMEOUT_S, call_with_timeout
from nasplat.store.redact import redact_text, redact_url
from nasplat.tasks import get_task

DEFAULT_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433, "oracle": 1521}


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "no answer (timed out)"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def tcp_reachable(host: str, port: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """None when a TCP connection to host:port opens within `timeout_s`, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as e:
        return _reason(e)


def http_healthy(url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """None when GET `url` answers 2xx within `timeout_s`, else why not. Proxies are ignored:
    the services we probe are the ones the command itself connects to directly."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except (OSError, ValueError) as e:
        return _reason(e)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `host:port` or `scheme://host:port`; None for `auto` / no port."""
    parsed = urllib.parse.urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parsed.port
    except ValueError:
        return None
    if not parsed.hostname or port is None:
        return None
    return parsed.hostname, port


def check_tracking(experiment: Experiment, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    uri = experiment.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    why = http_healthy(uri.rstrip("/") + "/health", timeout_s)
    if why is not None:
        raise ConfigError(f"the tracking server {redact_url(uri)} does not answer within {timeout_s:g} s: {why}",
                          source=str(experiment.path), key="tracking.uri")


def check_storage(experiment: Experiment, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    import sqlalchemy as sa

    url = experiment.storage_url
    key = "search.storage"
    try:
        parsed = sa.engine.make_url(url)
    except Exception:  # noqa: BLE001 - any parse error is one line naming the key
        raise ConfigError(f"{redact_url(url)} is not a database URL", source=str(experiment.path), key=key) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite" or not parsed.host:
        return  # a file (or a local socket the driver reaches without a TCP port)
    port = parsed.port or _DEFAULT_PORTS.get(backend)
    if port is None:
        return
    why = tcp_reachable(parsed.host, port, timeout_s)
    if why is None:  # a port that accepts is not yet a database that answers: ask it something
        why = _query(url, backend, timeout_s)
    if why is not None:
        raise ConfigError(f"the study database {redact_url(url)} does not answer within {timeout_s:g} s: {why}",
                          source=str(experiment.path), key=key)


def _query(url: str, backend: str, timeout_s: float) -> str | None:
    """`SELECT 1` on the database at `url` within `timeout_s` (the driver's connect timeout set,
    and the whole call bounded: a server that accepts and never answers must not hang a command).
    None when it answered, else the reason, redacted."""
    import sqlalchemy as sa

    args = {"connect_timeout": max(1, int(timeout_s))} if backend == "postgresql" else {}

    def ask() -> None:
        engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()

    try:
        call_with_timeout(ask, timeout_s, "the study database")
    except StorageError:
        return "it accepts connections but does not answer a query"
    except Exception as e:  # noqa: BLE001 - the driver's error, one redacted line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return redact_text(first, url)
    return None


def check_cluster(experiment: Experiment, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    address = experiment.cluster.address
    if not address or address == "auto":
        return
    hp = _host_port(address)
    if hp is None:
        raise ConfigError(f"cluster.address {address!r} is neither auto nor host:port (or ray://host:port)",
                          source=str(experiment.path), key="cluster.address")
    why = tcp_reachable(*hp, timeout_s)
    if why is not None:
        raise ConfigError(f"the Ray cluster at {redact_url(address)} does not answer within {timeout_s:g} s: {why}",
                          source=str(experiment.path), key="cluster.address")


def check_search(experiment: Experiment, objective: str | None = None) -> None:
    """An unknown objective and a budget (on the total or a part) no subnet fits, before anything
    is opened."""
    allowed = get_task(experiment.task).search_objectives
    if objective is not None and objective not in allowed:
        raise ConfigError(f"unknown objective {objective!r}; allowed: {', '.join(sorted(allowed))}",
                          source=str(experiment.path), key="--objective")
    budget, parts = experiment.search.budget_gflops, experiment.search.part_budgets or {}
    if budget is None and not parts:
        return
    space = experiment.search_space  # search.fix pinned: its smallest subnet may be larger
    smallest = get_task(experiment.task).gflops(experiment)(space.min_arch())  # the smallest in every part too
    if budget is not None and budget < smallest["total"]:
        raise BudgetError(f"budget {budget} GFLOPs is below the smallest subnet of space {space.name!r} "
                          f"({smallest['total']:.4f} GFLOPs)", source=str(experiment.path), key="search.budget_gflops")
    for part, limit in parts.items():
        if limit < smallest[part]:
            raise BudgetError(f"budget {limit} GFLOPs for the {part} is below the {part} of the smallest subnet of "
                              f"space {space.name!r} ({smallest[part]:.4f} GFLOPs)", source=str(experiment.path),
                              key=f"search.budget_gflops.{part}")


def check_storage_root(experiment: Experiment, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Write, read back and delete a probe object under the storage root (an object store, or a
    folder other than the output directory, which the command creates anyway). Raises
    StorageError naming the experiment file, `storage_path` and the redacted URI."""
    storage = experiment.storage
    if storage.local is not None and storage.local == experiment.output_dir:
        return
    try:
        storage.probe(timeout_s=timeout_s)
    except StorageError as e:
        raise StorageError(e.detail, source=str(experiment.path), key="storage_path") from None


def check_retrain(experiment: Experiment) -> None:
    """On the embedded default, a retrain trial may not ask for more CPUs than this machine has
    (64 on 2 cores started a local Ray of 64 CPUs and recorded 32x the core-hours). Raises
    ConfigError naming `retrain.cpus_per_trial`."""
    rc = experiment.retrain
    if rc is None or experiment.cluster.address is not None:
        return
    have = os.cpu_count() or 1
    want = rc.trial_cpus(experiment.cluster)
    if want > have:
        key = "retrain.cpus_per_trial" if rc.cpus_per_trial is not None else "cluster.cpus_per_worker"
        raise ConfigError(f"{want} CPUs per retrain trial, but this machine has {have}", source=str(experiment.path),
                          key=key)


# the phases (`Task.phases`) each command runs after training
_COMMAND_PHASES = {"search": ("search",), "run": ("search",), "retrain": ("retrain",), "validate": ("retrain",),
                   "subnet eval": ("subnet",), "subnet export": ("subnet",)}


def check_task(experiment: Experiment, command: str) -> None:
    """Raise ConfigError (key `task`) when `command` runs a phase the experiment's task does not
    have (`Task.phases`): its own, a `retrain:` section `nasplat run` would retrain, or a
    latency table the search would use."""
    task = get_task(experiment.task)
    needs = list(_COMMAND_PHASES.get(command, ()))
    key = "task"
    if command == "run" and experiment.retrain is not None:
        needs.append("retrain")
        key = "retrain"
    if command in ("search", "run") and experiment.search.uses_latency:
        needs.append("latency")
        key = "search.budget_latency_ms" if experiment.search.budget_latency_ms is not None else "search.cost"
    missing = [phase for phase in needs if phase not in task.phases]
    if not missing:
        return
    if missing[0] in _COMMAND_PHASES.get(command, ()):
        raise ConfigError(f"`nasplat {command}` is not available for task {task.name!r} yet: it has no "
                          f"{missing[0]} phase", source=str(experiment.path), key="task")
    raise ConfigError(f"task {task.name!r} has no {missing[0]} phase yet: `nasplat {command}` cannot use it",
                      source=str(experiment.path), key=key)


def preflight(experiment: Experiment, *, search: bool = True, tracking: bool = True, objective: str | None = None,
              timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Check what a command needs (see the module doc). `search`: the command runs a search
    (objective, budget and study database checked); `tracking`: it logs to MLflow. Raises
    ConfigError / BudgetError naming the experiment file and key."""
    if search:
        check_search(experiment, objective)
        check_retrain(experiment)
    check_cluster(experiment, timeout_s)
    check_storage(experiment, timeout_s)
    if tracking:
        check_tracking(experiment, timeout_s)
    check_storage_root(experiment, max(timeout_s, PROBE_TIMEOUT_S))


__all__ = ["DEFAULT_TIMEOUT_S", "check_cluster", "check_task", "check_retrain", "check_search", "check_storage", "check_storage_root", "check_tracking", "http_healthy",
           "preflight", "tcp_reachable"]
