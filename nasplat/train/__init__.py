"""Supernet training: the loop, one sandwich step with in-place distillation, the sandwich sampler,
losses, data order, checkpoints that resume bit-for-bit, gradient all-reduce, and the Ray Train
wrapper (`nasplat.train.distributed`, imported only where Ray is used).

The loop is a plain function of an experiment (`run_training(experiment, WorkerContext)`), the
same in one process and in every Ray Train worker. Which of the two runs, and what watches the
events, is decided by `nasplat.orchestration.training.train_supernet`.
"""

from nasplat.train.loop import (
    CHECKPOINT_VERSION,
    SUPERNET,
    Monitor,
    MonitorFactory,
    SupernetTrainer,
    WorkerContext,
    run_training,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "SUPERNET",
    "Monitor",
    "MonitorFactory",
    "SupernetTrainer",
    "WorkerContext",
    "run_training",
]
