"""Ray Train wrapper around the plain training loop.

`train_loop_per_worker(config)` is the function each Ray Train worker runs; Ray has already set up
torch.distributed (gloo on CPU, NCCL on GPU). `train_with_ray` runs it on the Ray that the caller
started or joined (`nasplat.orchestration.cluster`, the one place that calls `ray.init`).

Workers may run on nodes that share no disk with the driver, so nothing they need comes as a
path: the frozen `Experiment` travels by value (space and recipe included), each worker generates
the synthetic data on its own node when asked for, and rank 0's checkpoints are handed to Ray
(`ray.train.report(metrics, checkpoint=Checkpoint.from_directory(...))`), which stores them under
`RunConfig(storage_path=<storage root>/ray, name=<experiment>)`: a folder or an object store
(`storage_path`). Re-running the same experiment resumes from Ray's latest checkpoint on any
cluster (and from the local checkpoint folder when Ray has none). At the end the driver copies the
final checkpoint out of Ray's storage into its checkpoint folder and, for an object store,
publishes it as `checkpoints/latest.pt` under the root, where evaluators and retrain trials fetch
it. Rank 0's events (losses, the per-epoch val AP it computes) travel to the driver over a Ray
queue: the training log and MLflow are written there, not on a worker that may not reach them.
Gradients are all-reduced by `nasplat.train.ddp`, not by DDP's reducer (see there why).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train import CheckpointConfig as RayCheckpointConfig
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from nasplat.config import Experiment
from nasplat.errors import NasplatError, TrainingError
from nasplat.faults import causes, machine_fault
from nasplat.files import atomic_write_json
from nasplat.interrupt import run_in_thread
from nasplat.train.checkpoint import LATEST, copy_checkpoint, find_latest, publish_supernet
from nasplat.train.data import ensure_data
from nasplat.train.loop import WorkerContext, run_training
from nasplat.train.process_group import BoundTorchConfig

log = logging.getLogger(__name__)


_PROGRESS_KEYS = ("event", "epoch", "step", "batch", "steps_per_epoch", "lr", "samples_per_s")
EVENT_PUT_TIMEOUT_S = 30.0  # a driver this far behind loses events, the workers lose no time


def progress_message(event: dict[str, Any], val: dict[str, float] | None = None) -> dict[str, Any]:
    """A training event as it travels to the driver: small and picklable (the epoch event also
    carries the network, which must not travel), every loss as a float, and `val` (the val AP
    rank 0 measured at the end of the epoch, if any) under "val"."""
    out = {k: event[k] for k in _PROGRESS_KEYS if k in event}
    out["losses"] = {k: float(v) for k, v in (event.get("losses") or {}).items()}
    if val:
        out["val"] = dict(val)
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
    """Ray Train entry point. config: {"experiment": the frozen `Experiment` (by value),
    "evaluate": an optional picklable factory `f(experiment) -> (epoch event -> val metrics)`
    that rank 0 runs on its network at the end of every epoch, "events": an optional
    `ray.util.queue.Queue` that rank 0 feeds with `progress_message`s (with the val metrics) for
    the driver's training log, MLflow and progress bar}."""
    _quiet_ray_train_reports()
    experiment: Experiment = config["experiment"]
    ensure_data(experiment)  # on this worker's node: nodes may share no disk with the driver
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

    progress: Callable[[dict[str, Any]], None] | None = None
    if rank == 0:
        factory = config.get("evaluate")
        evaluate = factory(experiment) if factory is not None else None
        queue = config.get("events")

        def on_event(event: dict[str, Any]) -> None:
            val = evaluate(event) if evaluate is not None and event["event"] == "epoch" else None
            if queue is None:
                return
            try:
                queue.put(progress_message(event, val), timeout=EVENT_PUT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - a full or gone queue must not stop training
                log.warning("the driver did not take a training event within %.0f s; it is dropped",
                            EVENT_PUT_TIMEOUT_S, exc_info=True)

        progress = on_event

    try:
        run_training(
            experiment,
            WorkerContext(rank=rank, world_size=world, device=device, report=report, resume_from=resume_from,
                          progress=progress),
        )
    finally:
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
    return next((e for e in causes(error) if isinstance(e, NasplatError)), None)


def train_with_ray(
    experiment: Experiment,
    *,
    evaluate: Callable[[Experiment], Callable[[dict[str, Any]], dict[str, float] | None]] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the experiment's supernet with Ray Train on `cluster.num_workers` workers of the Ray
    this process has started or joined (`nasplat.orchestration.cluster.ray_session`).

    `evaluate(experiment)` (picklable) builds, on rank 0, what measures the val AP at the end of
    an epoch. `progress(message)` receives rank 0's step and epoch events (`progress_message`:
    losses as floats, the val AP under "val", no network) in this process. Returns the final
    checkpoint, copied from Ray's storage into the experiment's checkpoint folder (and published
    under an object-store root as `checkpoints/latest.pt`). Raises TrainingError if Ray is not
    running or the run fails.
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
            train_loop_config={"experiment": experiment, "evaluate": evaluate, "events": queue},
            torch_config=BoundTorchConfig(backend="nccl" if cluster.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cluster.num_workers,
                use_gpu=cluster.use_gpu,
                resources_per_worker={"CPU": cluster.cpus_per_worker},
            ),
            run_config=RunConfig(
                name=experiment.name,
                storage_path=experiment.storage.join("ray"),
                # Ray keeps the reported checkpoints too: as many as the output directory does
                checkpoint_config=RayCheckpointConfig(num_to_keep=experiment.trainer.checkpoint.keep + 1),
            ),
        )
        from nasplat import logs

        logs.adopt(*logs.LIBRARY_LOGGERS)
        started = time.time()
        try:
            # in a worker thread, where Ray Train installs no SIGINT handler of its own (it would
            # end the run as if training had finished): a signal ends the command here instead
            result = run_in_thread(trainer.fit, "ray-train")
        except Exception as e:  # Ray wraps worker errors in its own types
            cause = worker_cause(e)
            if cause is not None:  # a nasplat error on a worker (bad data, MLflow, ...) reads as itself
                raise cause from e
            fault = machine_fault(e)  # a full disk, a worker killed for memory: not a bug
            if fault is not None:
                raise TrainingError(f"training stopped: {fault}; the same command resumes from the last checkpoint",
                                    source=str(experiment.path)) from e
            raise TrainingError(f"Ray Train run failed: {e}".splitlines()[0], source=str(experiment.path)) from e
    finally:
        stop.set()
        if drainer is not None:
            drainer.join(timeout=5)
        if queue is not None:
            queue.shutdown()
    return _final_checkpoint(experiment, result, started)


def _final_checkpoint(experiment: Experiment, result: Any, started: float) -> Path:
    """The run's final checkpoint in this process's checkpoint folder: copied out of Ray's
    storage (rank 0 may have written its own copy on another node), with `final.json` beside it
    (rank 0's own when it wrote one here during this run), and published under an object-store
    root (`publish_supernet`)."""
    ckpt = result.checkpoint
    if ckpt is None:
        latest = find_latest(experiment.checkpoint_dir)
        if latest is None:
            raise TrainingError("training finished without a checkpoint", source=str(experiment.path))
        publish_supernet(experiment, latest)
        return latest
    with tempfile.TemporaryDirectory(prefix="nasplat-final-") as tmp:
        local = Path(ckpt.to_directory(str(Path(tmp) / "ckpt"))) / LATEST
        if not local.is_file():
            raise TrainingError(f"Ray's final checkpoint {ckpt.path} holds no {LATEST}", source=str(experiment.path))
        latest = copy_checkpoint(local, experiment.checkpoint_dir / LATEST)
    final = experiment.checkpoint_dir / "final.json"
    if not final.is_file() or final.stat().st_mtime < started:  # rank 0 ran on another node
        metrics = dict(result.metrics or {})
        atomic_write_json({"checkpoint": str(latest), "ray_checkpoint": str(ckpt.path),
                           **{k: metrics[k] for k in ("epoch", "step") if k in metrics}}, final)
    publish_supernet(experiment, latest)
    return latest


__all__ = ["progress_message", "train_loop_per_worker", "train_with_ray", "worker_cause"]
