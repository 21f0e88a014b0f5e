"""Ray Train wrapper around the plain training loop.

`train_loop_per_worker(config)` is the function each Ray Train worker runs; Ray has already set up
torch.distributed (gloo on CPU, NCCL on GPU). `train_with_ray` runs it on the Ray that the caller
started or joined (`nasplat.orchestration.cluster`, the one place that calls `ray.init`). Rank 0's checkpoints are handed to Ray
(`ray.train.report(metrics, checkpoint=Checkpoint.from_directory(...))`) and stored under
`RunConfig(storage_path=<output_dir>/ray, name=<experiment>)`, so re-running the same experiment
resumes from Ray's latest checkpoint on any cluster (and from the output directory's when Ray has
none). Gradients are all-reduced by `nasplat.train.ddp`, not by DDP's reducer (see there why).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train import CheckpointConfig as RayCheckpointConfig
from ray.train.torch import TorchConfig, TorchTrainer
from ray.util.queue import Empty, Queue

from nasplat.config import Experiment, load_experiment
from nasplat.errors import NasplatError, TrainingError
from nasplat.train.checkpoint import LATEST, find_latest
from nasplat.train.loop import Monitor, MonitorFactory, WorkerContext, run_training

log = logging.getLogger(__name__)


_PROGRESS_KEYS = ("event", "epoch", "step", "batch", "steps_per_epoch", "lr", "samples_per_s")


def progress_message(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a training event the driver's progress bar needs, small and picklable (the
    epoch event also carries the network, which must not travel)."""
    out = {k: event[k] for k in _PROGRESS_KEYS if k in event}
    losses = event.get("losses") or {}
    if "total" in losses:
        out["losses"] = {"total": float(losses["total"])}
    return out


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report and checkpoint at INFO; the driver shows a progress bar
    instead. The report line comes from a logger named after its source file, not `ray.train.*`."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray layout: its report lines stay
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. config: {"experiment": path to the experiment YAML,
    "monitor": an optional picklable `MonitorFactory` whose monitor rank 0 feeds with every event
    (training log, MLflow, per-epoch val AP), "progress": an optional `ray.util.queue.Queue` that
    rank 0 feeds with `progress_message`s for the driver's progress bar}."""
    _quiet_ray_train_reports()
    experiment = load_experiment(config["experiment"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if experiment.cluster.use_gpu:
        device = str(ray.train.torch.get_device())
    else:
        device = "cpu"

    resume_from: Path | None = None
    scratch = Path(tempfile.mkdtemp(prefix="nasplat-resume-"))
    ray_ckpt = ray.train.get_checkpoint()
    if ray_ckpt is not None:
        local = Path(ray_ckpt.to_directory(str(scratch / "ckpt")))
        if (local / LATEST).is_file():
            resume_from = local / LATEST

    def report(metrics: dict[str, float], path: Path | None) -> None:
        if path is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="nasplat-ckpt-") as tmp:
            shutil.copy2(path, Path(tmp) / LATEST)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp))

    monitor: Monitor | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    if rank == 0:
        factory = config.get("monitor")
        monitor = factory(experiment) if factory is not None else None
        queue = config.get("progress")

        def on_event(event: dict[str, Any]) -> None:
            if monitor is not None:
                monitor(event)
            if queue is not None:
                try:
                    queue.put_nowait(progress_message(event))
                except Exception:  # noqa: BLE001 - a full or gone queue must not stop training
                    log.debug("progress queue unavailable", exc_info=True)

        progress = on_event

    try:
        run_training(
            experiment,
            WorkerContext(rank=rank, world_size=world, device=device, report=report, resume_from=resume_from,
                          progress=progress),
        )
    finally:
        if monitor is not None:
            monitor.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _drain(queue: Any, progress: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    """Hand rank 0's progress messages to `progress` until `stop` is set and the queue is empty."""
    while True:
        try:
            progress(queue.get(timeout=0.2))
        except Empty:
            if stop.is_set():
                return
        except Exception:  # noqa: BLE001 - the queue actor went away with Ray: nothing more to show
            log.debug("progress queue closed", exc_info=True)
            return


def worker_cause(error: BaseException) -> NasplatError | None:
    """The NasplatError a Ray Train worker (or its controller) raised, found inside Ray's wrapper
    (`worker_failures`, `controller_failure`, task-error causes, exception chains), or None."""
    seen: set[int] = set()
    todo: list[object] = [error]
    while todo:
        e = todo.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, NasplatError):
            return e
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo.extend(failures[k] for k in sorted(failures, reverse=True))  # rank 0 first
        todo.extend([getattr(e, "controller_failure", None), getattr(e, "cause", None), e.__cause__, e.__context__])
    return None


def train_with_ray(
    experiment: Experiment,
    *,
    monitor: MonitorFactory | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the experiment's supernet with Ray Train on `cluster.num_workers` workers of the Ray
    this process has started or joined (`nasplat.orchestration.cluster.ray_session`).

    `monitor(experiment)` builds, on rank 0, what receives every training event (training log,
    MLflow, per-epoch val AP). `progress(message)` receives rank 0's step and epoch events
    (`progress_message`: no losses per member, no network) in this process. Returns the path of
    the final checkpoint in the output directory. Raises TrainingError if Ray is not running or
    the run fails.
    """
    if not ray.is_initialized():
        raise TrainingError("Ray is not running; start or join it first (nasplat.orchestration.cluster.ray_session)",
                            source=str(experiment.path))
    cluster = experiment.cluster
    queue = drainer = None
    stop = threading.Event()
    try:
        if progress is not None:
            # a bounded queue on a zero-CPU actor: it never takes a worker's slot, and a slow driver
            # loses progress messages (put_nowait fails), never training time
            queue = Queue(maxsize=1000, actor_options={"num_cpus": 0})
            drainer = threading.Thread(target=_drain, args=(queue, progress, stop), daemon=True)
            drainer.start()
        trainer = TorchTrainer(
            train_loop_per_worker=train_loop_per_worker,
            train_loop_config={"experiment": str(experiment.path), "monitor": monitor, "progress": queue},
            torch_config=TorchConfig(backend="nccl" if cluster.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cluster.num_workers,
                use_gpu=cluster.use_gpu,
                resources_per_worker={"CPU": cluster.cpus_per_worker},
            ),
            run_config=RunConfig(
                name=experiment.name,
                storage_path=str(experiment.output_dir / "ray"),
                # Ray keeps the reported checkpoints too: as many as the output directory does
                checkpoint_config=RayCheckpointConfig(num_to_keep=experiment.trainer.checkpoint.keep + 1),
            ),
        )
        try:
            trainer.fit()
        except Exception as e:  # Ray wraps worker errors in its own types
            cause = worker_cause(e)
            if cause is not None:  # a nasplat error on a worker (bad data, MLflow, ...) reads as itself
                raise cause from e
            raise TrainingError(f"Ray Train run failed: {e}".splitlines()[0], source=str(experiment.path)) from e
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(timeout=5)
        if queue is not None:
            queue.shutdown()
    latest = find_latest(experiment.checkpoint_dir)
    if latest is None:
        raise TrainingError("training finished without a checkpoint", source=str(experiment.path))
    return latest


__all__ = ["progress_message", "train_loop_per_worker", "train_with_ray", "worker_cause"]
