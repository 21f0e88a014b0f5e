"""Where a command runs: the one place that decides local vs `--cluster` and calls `ray.init`.

Every command that can use a cluster (`nasplat run`, `train`, `search`) passes its experiment
through `for_command(experiment, cluster=...)`: with `--cluster` the experiment must name
`cluster.address` (ConfigError otherwise), without it the address is dropped and everything runs
on the embedded default (a local Ray started by this process). Training (Ray Train workers) and
the search (evaluator actors) then start or join Ray through `init_ray` / `ray_session`, with the
same options: no dashboard, Ray's own logging left alone, worker output kept in Ray's session logs
rather than on the console, and a worker setup hook that quiets Ray Train's placement-group
cleaner.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nasplat.config import Experiment
from nasplat.errors import ConfigError, NasplatError

log = logging.getLogger(__name__)

# Ray Train turns every print() of a worker into a log record (even under redirect_stdout), so
# pycocotools' summaries would flood the driver at each evaluation; the hook runs in every worker.
_RUNTIME_ENV = {
    "env_vars": {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"},
    "worker_process_setup_hook": f"{__name__}.quiet_worker_logs",
}


def for_command(experiment: Experiment, *, cluster: bool) -> Experiment:
    """The experiment as a command runs it: joined to `cluster.address` with `--cluster`, on the
    embedded local Ray (address dropped) without. Raises ConfigError when `--cluster` is given and
    the experiment names no address."""
    if cluster:
        if not experiment.cluster.address:
            raise ConfigError("--cluster needs cluster.address (e.g. auto or ray://host:10001)",
                              source=str(experiment.path), key="cluster.address")
        return experiment
    if experiment.cluster.address is None:
        return experiment
    return dataclasses.replace(experiment, cluster=dataclasses.replace(experiment.cluster, address=None))


def quiet_worker_logs() -> None:
    """Runs in every Ray worker process of the job (`worker_process_setup_hook`). Without the Ray
    dashboard (a local Ray here has none: it needs ray[default]) Ray Train's placement-group
    cleaner cannot reach the state API and warns about it about once a second for the whole run;
    the placement group goes with the local Ray at shutdown anyway."""
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


# Ray's switch for "this node is part of a multi-node cluster"; off, Ray takes 127.0.0.1 as the
# node's address, and its servers (GCS, raylet, workers) then listen on the loopback only. Ray
# reads it when `ray._private.ray_constants` is imported, so `_loopback_only` sets both.
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_only(on: bool) -> None:
    """Make the Ray this process starts next bind and advertise 127.0.0.1 (`on`), or the
    machine's address as Ray decides itself (joining a cluster)."""
    from ray._private import ray_constants

    if on:
        os.environ[_CLUSTER_SWITCH] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif os.environ.get(_CLUSTER_SWITCH) == "0":
        del os.environ[_CLUSTER_SWITCH]
        ray_constants.ENABLE_RAY_CLUSTER = not ray_constants.IS_WINDOWS_OR_OSX


def runtime_env(user: dict[str, Any] | None) -> dict[str, Any]:
    """The job's Ray runtime_env: the experiment's `cluster.runtime_env` as it is, with nasplat's
    worker settings added (its `env_vars` merged; the worker setup hook kept unless it names one)."""
    env = dict(user or {})
    env["env_vars"] = {**_RUNTIME_ENV["env_vars"], **(env.get("env_vars") or {})}
    env.setdefault("worker_process_setup_hook", _RUNTIME_ENV["worker_process_setup_hook"])
    return env


def init_ray(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None,
             env: dict[str, Any] | None = None) -> bool:
    """Start an embedded local Ray (`address` None; `num_cpus` / `num_gpus` its size), which
    listens on and advertises 127.0.0.1 only, or join the cluster at `address` with the runtime
    environment `env` (`cluster.runtime_env`; see `runtime_env`). Returns True when
    this call started or joined Ray, False when this process already had it (an embedded one that
    is smaller than asked for is started again at the asked size). Raises NasplatError
    (naming `cluster.address`) when Ray cannot be started or the cluster cannot be reached."""
    import ray  # heavy; only the commands that run something start it

    from nasplat import logs

    logs.adopt(*logs.LIBRARY_LOGGERS)  # Ray set its console handler up at import

    keep = _python_signal_handlers()  # before a shutdown too: Ray's resets SIGTERM to the default
    if ray.is_initialized():
        if address is not None or not _too_small(ray, num_cpus, num_gpus):
            return False
        # An embedded Ray this process started earlier (an earlier phase) is smaller than this
        # phase needs: its work would wait for ever for resources. Start it again at this size.
        log.warning("the local Ray has fewer CPUs/GPUs than this phase needs; restarting it with %s CPUs, %s GPUs",
                    num_cpus, num_gpus)
        shutdown_ray()
    try:
        _loopback_only(address is None)
        if address is None:
            ray.init(
                address="local",  # a new embedded cluster, never one another process started
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                runtime_env=_RUNTIME_ENV,
            )
        else:
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env=runtime_env(env))
    except Exception as e:  # noqa: BLE001 - whatever Ray raises is one line naming the key
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if address is None:
            raise NasplatError(f"cannot start a local Ray: {first}", key="cluster") from e
        raise NasplatError(f"cannot connect to Ray at {address!r}: {first}", key="cluster.address") from e
    _restore_signal_handlers(keep)
    return True


def _python_signal_handlers() -> dict[int, Any]:
    """This process's Python handlers of SIGTERM and SIGINT (in the main thread; else none)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}


def _restore_signal_handlers(handlers: dict[int, Any]) -> None:
    """Put the Python handlers back: `ray.init` installs its core worker's own handler of SIGTERM
    (a stack dump, then abort: exit -6), under Python's, and a stopped `nasplat run` must end in
    its one line instead (`nasplat.interrupt`)."""
    for sig, handler in handlers.items():
        if callable(handler) or handler in (signal.SIG_DFL, signal.SIG_IGN):
            signal.signal(sig, handler)


def _too_small(ray: object, num_cpus: int | None, num_gpus: int | None) -> bool:
    """Whether the running Ray has fewer CPUs or GPUs than asked for."""
    total = ray.cluster_resources()  # type: ignore[attr-defined]
    return (num_cpus is not None and total.get("CPU", 0) < num_cpus) or (
        num_gpus is not None and total.get("GPU", 0) < num_gpus)


@contextmanager
def ray_session(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None,
                env: dict[str, Any] | None = None) -> Iterator[None]:
    """`init_ray` for the duration of a block; shuts Ray down afterwards if the block started it."""
    started = init_ray(address, num_cpus=num_cpus, num_gpus=num_gpus, env=env)
    try:
        yield
    finally:
        if started:
            shutdown_ray()


def shutdown_ray() -> None:
    """`ray.shutdown()`, keeping this process's Python signal handlers working: Ray's core worker
    resets the C-level SIGTERM handler to the default on shutdown (Python still reports its own
    handler, but a SIGTERM then kills the process with no line, exit -15), so they are installed
    again."""
    import ray

    keep = _python_signal_handlers()
    ray.shutdown()
    _restore_signal_handlers(keep)


__all__ = ["for_command", "init_ray", "quiet_worker_logs", "ray_session", "runtime_env", "shutdown_ray"]
