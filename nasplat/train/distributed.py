"""Ray Train wrapper around the plain training loop.

`train_loop_per_worker(config)` is the function each Ray Train worker runs; Ray has already set up
torch.distributed (gloo on CPU, NCCL on GPU). Rank 0's checkpoints are handed to Ray
(`ray.train.report(metrics, checkpoint=Checkpoint.from_directory(...))`) and stored under
`RunConfig(storage_path=<output_dir>/ray, name=<experiment>)`, so re-running the same experiment
resumes from Ray's latest checkpoint on any cluster (and from the output directory's when Ray has
none). Gradients are all-reduced by `nasplat.train.ddp`, not by DDP's reducer (see there why).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nasplat.train.checkpoint import LATEST
from nasplat.train.config import Experiment, load_experiment
from nasplat.train.loop import WorkerContext, run_training

log = logging.getLogger(__name__)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. config: {"experiment": path to the experiment YAML,
    "mlflow": bool (rank 0 logs to the experiment's tracking URI)}."""
    import ray.train
    from ray.train import Checkpoint

    experiment = load_experiment(config["experiment"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if experiment.cluster.use_gpu:
        import ray.train.torch

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

    progress = None
    if rank == 0:
        from nasplat.train.logger import TrainLogger

        progress = TrainLogger(experiment, mlflow=bool(config.get("mlflow", True)))
    try:
        run_training(
            experiment,
            WorkerContext(rank=rank, world_size=world, device=device, report=report, resume_from=resume_from,
                          progress=progress),
        )
    finally:
        if progress is not None:
            progress.close()
        shutil.rmtree(scratch, ignore_errors=True)


def train_with_ray(experiment: Experiment, *, mlflow: bool = True) -> Path:
    """Train the experiment's supernet with Ray Train on `cluster.num_workers` workers.

    Uses the cluster at `cluster.address` (None: a local Ray started here). Returns the path of
    the final checkpoint in the output directory. Raises TrainingError if the run fails.
    """
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from nasplat.errors import TrainingError
    from nasplat.train.checkpoint import find_latest

    cluster = experiment.cluster
    started = False
    if not ray.is_initialized():
        if cluster.address is None:
            ray.init(address="local", num_cpus=max(cluster.num_workers * cluster.cpus_per_worker, 1),
                     include_dashboard=False, log_to_driver=True)
        else:
            ray.init(address=cluster.address, log_to_driver=True)
        started = True
    try:
        trainer = TorchTrainer(
            train_loop_per_worker=train_loop_per_worker,
            train_loop_config={"experiment": str(experiment.path), "mlflow": mlflow},
            torch_config=TorchConfig(backend="nccl" if cluster.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cluster.num_workers,
                use_gpu=cluster.use_gpu,
                resources_per_worker={"CPU": cluster.cpus_per_worker},
            ),
            run_config=RunConfig(name=experiment.name, storage_path=str(experiment.output_dir / "ray")),
        )
        try:
            trainer.fit()
        except Exception as e:  # Ray wraps worker errors in its own types
            raise TrainingError(f"Ray Train run failed: {e}".splitlines()[0], source=str(experiment.path)) from e
    finally:
        if started:
            ray.shutdown()
    latest = find_latest(experiment.checkpoint_dir)
    if latest is None:
        raise TrainingError("training finished without a checkpoint", source=str(experiment.path))
    return latest


__all__ = ["train_loop_per_worker", "train_with_ray"]
