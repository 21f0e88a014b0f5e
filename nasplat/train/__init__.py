"""Supernet training: experiment/recipe config, sandwich steps with in-place distillation, BN
recalibration, exact resume, Ray Train, subnet evaluation and export.

The heavy pieces are imported lazily so that `nasplat.train.config` stays cheap to import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nasplat.train.config import Experiment, TrainerRecipe, load_experiment, load_trainer

log = logging.getLogger(__name__)


def train_supernet(
    experiment: Experiment,
    *,
    progress: Callable[[dict[str, Any]], None] | None = None,
    mlflow: bool = True,
    evaluate: bool = True,
) -> Path:
    """Train the experiment's supernet, or resume it from its latest checkpoint. Returns the path
    of the final checkpoint.

    Generates the synthetic data set first when the experiment asks for it. One worker without a
    cluster address trains in this process (no Ray); otherwise Ray Train runs
    `cluster.num_workers` workers. `progress(event)` receives every step and epoch event
    ({"event": "step" | "epoch", "epoch", "step", "losses", "samples_per_s", ...}; from Ray
    workers only `distributed.progress_message`'s fields, with losses {"total"}).
    Raises DataError, TrainingError, ConfigError.
    """
    from nasplat.train.loop import WorkerContext, ensure_data, run_training

    ensure_data(experiment)
    cluster = experiment.cluster
    if cluster.num_workers == 1 and cluster.address is None:
        import torch

        from nasplat.train.logger import TrainLogger

        device = "cuda" if cluster.use_gpu and torch.cuda.is_available() else "cpu"
        logger = TrainLogger(experiment, mlflow=mlflow, evaluate=evaluate)

        def both(event: dict[str, Any]) -> None:
            logger(event)
            if progress is not None:
                progress(event)

        try:
            path = run_training(experiment, WorkerContext(device=device, progress=both))
        finally:
            logger.close()
        assert path is not None  # rank 0 always returns its checkpoint
        return path
    from nasplat.train.distributed import train_with_ray

    return train_with_ray(experiment, mlflow=mlflow, evaluate=evaluate, progress=progress)


__all__ = ["Experiment", "TrainerRecipe", "load_experiment", "load_trainer", "train_supernet"]
