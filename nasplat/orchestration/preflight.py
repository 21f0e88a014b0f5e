"""Per-node preflight for `--cluster`: every node can run the job before the job starts.

`probe.preflight` proves from the driver that the services answer. It cannot see what each node
of a Ray cluster has: a node without nasplat (or with another version) fails only when the first
actor lands there, minutes into training; a node that cannot reach the storage root fails at its
first checkpoint; a node without the data set fails at its first batch. Here one small Ray task is
pinned to every alive node (`NodeAffinitySchedulingStrategy(node_id, soft=False)`, `num_cpus=0`,
so a `--num-cpus=0` head is checked too) and runs `check_node` with the frozen `Experiment`
(passed by value: a node never re-reads the experiment file, which lives on the driver). It checks:

- nasplat: importable there and the driver's `nasplat.__version__`;
- storage: `Storage.probe` writes, reads back and deletes a small object under `storage_path`;
- data: `data.root` holds the train and val annotations, or (with `data.synthetic`) the node can
  write there to generate the same set from its seed;
- GPU: with `cluster.use_gpu`, torch sees a CUDA device on every node that advertises GPUs to Ray
  (a node without GPU resources is fine: Ray schedules no GPU work there).

`preflight_cluster` gathers one `NodeCheck` per node and raises one line naming the first node
that fails and what is wrong there; `cluster_preflight` is the CLI's call, which also prints the
table (`render_table`) before it raises.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from nasplat.config import Experiment
from nasplat.data.coco import annotation_path
from nasplat.data.source import check_source
from nasplat.errors import ConfigError, NasplatError, StorageError
from nasplat.storage import PROBE_TIMEOUT_S
from nasplat.store.redact import redact_url

OK = "ok"
NOT_APPLICABLE = "-"
NOT_CHECKED = "?"
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class NodeCheck:
    """What one node of the cluster can do for the job. Every check is "ok" or one line saying
    what is wrong there ("-": not needed on this node; "?": not run, the node did not answer)."""

    node_id: str  # Ray's hex node id
    address: str  # the node's IP
    cpus: float  # CPU / GPU resources Ray advertises for the node
    gpus: float
    nasplat_version: str  # nasplat.__version__ there; "" when it could not be read
    install: str  # nasplat importable there and the driver's version
    storage: str  # the storage root written, read back and deleted from there
    data: str  # the data set there, or writable to generate data.synthetic
    gpu: str  # with cluster.use_gpu: torch sees a CUDA device on a node with GPU resources

    @property
    def ok(self) -> bool:
        return self.install == OK and self.storage == OK and self.data == OK and self.gpu in (OK, NOT_APPLICABLE)

    @property
    def name(self) -> str:
        """The node as messages name it: its IP and short id."""
        return f"{self.address} ({self.node_id[:8]})"


# --- on the node ------------------------------------------------------------------------------------


def _one_line(error: BaseException) -> str:
    text = error.detail if isinstance(error, NasplatError) else str(error).strip()
    return (text.splitlines()[0] if text else "") or type(error).__name__


def _checked(check: Callable[[], str]) -> str:
    """`check()`, or what it raised as one line: no check may take the node's task down."""
    try:
        return check()
    except Exception as e:  # noqa: BLE001 - every failure is reported, never raised
        return _one_line(e)


def _check_install(driver_version: str) -> str:
    import nasplat

    if nasplat.__version__ != driver_version:
        return f"nasplat {nasplat.__version__} here, {driver_version} on the driver"
    return OK


def _check_storage(experiment: Experiment, timeout_s: float) -> str:
    experiment.storage.probe(timeout_s=timeout_s)
    return OK


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists())


def _check_data(experiment: Experiment) -> str:
    """The annotations are there, or the node can generate `data.synthetic` (the generator
    writes into the root and keeps a lock file beside it, see `train.data.ensure_data`), or, for
    a `data.root` in an object store, the store holds the annotations and the node's cache
    folder can be written (each node copies the set there on first use)."""
    root = Path(experiment.data.root)
    if experiment.data.source is not None:
        check_source(experiment.data.source)
        place = _nearest_existing(root)
        if not (place.is_dir() and os.access(place, os.W_OK | os.X_OK)):
            return f"the node's data cache {root} cannot be created ({place} is not writable; set NASPLAT_CACHE_DIR)"
        return OK
    if annotation_path(root, "train").is_file() and annotation_path(root, "val").is_file():
        return OK
    if experiment.data.synthetic is None:
        return f"no annotations under {root} and no data.synthetic"
    for place in ([root] if root.exists() else []) + [_nearest_existing(root.parent)]:
        if not (place.is_dir() and os.access(place, os.W_OK | os.X_OK)):
            return f"no annotations under {root} and {place} is not writable to generate data.synthetic"
    return OK


def _check_gpu(experiment: Experiment, gpus: float) -> str:
    if not experiment.cluster.use_gpu or gpus <= 0:
        return NOT_APPLICABLE
    import torch

    if torch.cuda.device_count() < 1:
        return (f"Ray advertises {gpus:g} GPU(s) but torch {torch.__version__} sees no CUDA device "
                f"(built for CUDA {torch.version.cuda or 'none'})")
    return OK


def check_node(experiment: Experiment, driver_version: str, *, gpus: float = 0.0,
               probe_timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, str]:
    """Run every check on this node (see the module doc) and return
    {"host", "nasplat_version", "install", "storage", "data", "gpu"}: each check "ok", "-" or one
    line saying what is wrong. `gpus`: the GPU resources Ray advertises for this node. Never
    raises: the driver turns what is wrong into the error."""
    import nasplat

    return {
        "host": socket.gethostname(),
        "nasplat_version": nasplat.__version__,
        "install": _checked(lambda: _check_install(driver_version)),
        "storage": _checked(lambda: _check_storage(experiment, probe_timeout_s)),
        "data": _checked(lambda: _check_data(experiment)),
        "gpu": _checked(lambda: _check_gpu(experiment, gpus)),
    }


# --- on the driver ----------------------------------------------------------------------------------


def _alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _failed_task(error: BaseException) -> str:
    """Why the check task failed on a node, as the `install` cell: nasplat (or a package it
    needs) cannot be imported there, a worker could not start, or the task failed otherwise.

    Ray's text of a task error starts with the task's name and pid and ends with the exception
    line, which is what is kept."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    missing = [line for line in lines if "No module named" in line]
    causes = (error, getattr(error, "cause", None), error.__cause__)
    if missing or any(isinstance(c, ImportError) for c in causes):
        return f"nasplat not importable: {missing[-1] if missing else last}"
    if type(error).__name__ == "WorkerCrashedError":  # the job's worker setup hook is nasplat's
        return "a Ray worker died at start: is nasplat installed there? set cluster.runtime_env"
    return f"the check failed there: {last}"


def _node_check(node: dict[str, Any], answer: dict[str, str] | None, failure: str | None) -> NodeCheck:
    resources = node.get("Resources") or {}
    answer = answer or {}
    return NodeCheck(
        node_id=str(node["NodeID"]),
        address=str(node.get("NodeManagerAddress", "?")),
        cpus=float(resources.get("CPU", 0.0)),
        gpus=float(resources.get("GPU", 0.0)),
        nasplat_version=answer.get("nasplat_version", ""),
        install=failure or answer.get("install", NOT_CHECKED),
        storage=answer.get("storage", NOT_CHECKED),
        data=answer.get("data", NOT_CHECKED),
        gpu=answer.get("gpu", NOT_CHECKED),
    )


def gather_checks(experiment: Experiment, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[NodeCheck]:
    """One `NodeCheck` per alive node of the Ray this process has joined (joining
    `cluster.address` first when it has none), in `ray.nodes()` order. A node that does not answer
    within `timeout_s` or whose task fails is a failed check, not an exception. Raises
    NasplatError only when Ray cannot be joined."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import nasplat
    from nasplat.orchestration.cluster import init_ray

    if not ray.is_initialized():
        init_ray(experiment.cluster.address, env=experiment.cluster.runtime_env)
    nodes = _alive_nodes()
    task = ray.remote(num_cpus=0, max_retries=0)(check_node)
    shared = ray.put(experiment)  # once, by value: the nodes never read the experiment file
    probe_timeout_s = min(PROBE_TIMEOUT_S, timeout_s / 2)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            shared, nasplat.__version__, gpus=float((node.get("Resources") or {}).get("GPU", 0.0)),
            probe_timeout_s=probe_timeout_s)
        for node in nodes
    ]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    answered = set(ready)
    checks = []
    for node, ref in zip(nodes, refs):
        if ref not in answered:
            _cancel(ref)
            checks.append(_node_check(node, None, f"no answer in {timeout_s:g} s: is nasplat installed there? "
                                                  "set cluster.runtime_env"))
            continue
        try:
            checks.append(_node_check(node, ray.get(ref), None))
        except Exception as e:  # noqa: BLE001 - Ray's RayTaskError, RuntimeEnvSetupError, ...
            checks.append(_node_check(node, None, _failed_task(e)))
    return checks


def _cancel(ref: Any) -> None:
    import ray

    try:
        ray.cancel(ref, force=True)
    except Exception:  # noqa: BLE001 - a task that cannot be cancelled ends on its own
        pass


# What is wrong, in the order a user fixes it: (NodeCheck field, key, error class).
_CHECKS: tuple[tuple[str, str, type[NasplatError]], ...] = (
    ("install", "cluster.runtime_env", ConfigError),
    ("storage", "storage_path", StorageError),
    ("data", "data.root", ConfigError),
    ("gpu", "cluster.use_gpu", ConfigError),
)


def _problem(check: NodeCheck) -> tuple[str, str, type[NasplatError]] | None:
    """(what is wrong, key, error class) of the first failing check of a node, or None."""
    for field, key, error in _CHECKS:
        value = getattr(check, field)
        if value != OK and not (field == "gpu" and value == NOT_APPLICABLE):
            return value, key, error
    return None


def require_ok(experiment: Experiment, checks: list[NodeCheck]) -> None:
    """Raise one line for the first node that fails a check, naming the node (IP and short id),
    what is wrong and its key (`cluster.runtime_env`, `storage_path` (StorageError), `data.root`,
    `cluster.use_gpu`); ConfigError naming `cluster.use_gpu` when the job asks for GPUs and no
    node has any, `cluster.address` when no node is alive."""
    source = str(experiment.path)
    if not checks:
        raise ConfigError("the Ray cluster has no alive node", source=source, key="cluster.address")
    failing = [(c, p) for c in checks if (p := _problem(c)) is not None]
    if failing:
        check, (what, key, error) = failing[0]
        more = f"; {len(failing) - 1} more node(s) fail too" if len(failing) > 1 else ""
        raise error(f"node {check.name}: {what}{more}", source=source, key=key)
    if experiment.cluster.use_gpu and not any(c.gpus > 0 for c in checks):
        raise ConfigError(f"no alive node of the cluster advertises a GPU ({len(checks)} node(s))",
                          source=source, key="cluster.use_gpu")


def preflight_cluster(experiment: Experiment, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[NodeCheck]:
    """Check every alive node (`gather_checks`) and return the checks when all pass. Raises
    ConfigError / StorageError as `require_ok`, NasplatError when Ray cannot be joined."""
    checks = gather_checks(experiment, timeout_s=timeout_s)
    require_ok(experiment, checks)
    return checks


# --- the terminal -----------------------------------------------------------------------------------


def _cell(value: str) -> Text:
    """A check's cell; Text, not markup: an error line may hold brackets (`[Errno 13]`)."""
    return Text(value, style="green" if value in (OK, NOT_APPLICABLE) else "red")


def render_table(checks: list[NodeCheck], title: str | None = None) -> Table:
    """One row per node: node, CPUs, GPUs, nasplat (its version, or what is wrong), storage, data,
    GPU check."""
    table = Table(title=title)
    for name in ("node", "CPUs", "GPUs"):
        table.add_column(name, justify="left" if name == "node" else "right", no_wrap=name == "node")
    for name in ("nasplat", "storage", "data", "GPU check"):
        table.add_column(name)
    for c in checks:
        nasplat = _cell(c.nasplat_version) if c.install == OK else _cell(c.install)
        table.add_row(c.name, f"{c.cpus:g}", f"{c.gpus:g}", nasplat, _cell(c.storage), _cell(c.data), _cell(c.gpu))
    return table


def cluster_preflight(experiment: Experiment, console: Console, *,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> list[NodeCheck] | None:
    """With `--cluster` (`cluster.address` set, see `cluster.for_command`): check every node,
    print the table to `console`, then raise as `preflight_cluster`. Without: nothing, None."""
    address = experiment.cluster.address
    if address is None:
        return None
    checks = gather_checks(experiment, timeout_s=timeout_s)
    console.print(render_table(checks, title=f"cluster {redact_url(address)}: {len(checks)} node(s)"))
    require_ok(experiment, checks)
    return checks


__all__ = ["DEFAULT_TIMEOUT_S", "NodeCheck", "check_node", "cluster_preflight", "gather_checks", "preflight_cluster",
           "render_table", "require_ok"]
