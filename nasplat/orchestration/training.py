"""The training phase: train (or resume) an experiment's supernet where the experiment says, and
watch it.

`train_supernet(experiment)` generates the synthetic data first when asked, records the phase,
and runs the plain training loop in this process (one worker, no cluster address) or on Ray Train
workers (`nasplat.train.distributed`) inside a Ray session (`nasplat.orchestration.cluster`).

Rank 0 measures, every `eval.every_epochs` epochs, the val AP of the max and min subnets after BN
recalibration (`EpochEval`, built inside the rank-0 worker from the picklable `EvalFactory`), and
its events come to this (driver) process, where a `TrainingMonitor` writes them to the JSON-lines
log `<output_dir>/train_log.jsonl` and the MLflow training run (`nasplat.tracking.TrainingTracker`):
a worker on another node may reach neither.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nasplat.config import Experiment
from nasplat.errors import TrainingError
from nasplat.files import atomic_write_text
from nasplat.interrupt import set_activity
from nasplat.orchestration.cluster import ray_session
from nasplat.orchestration.phases import Phase, Phases
from nasplat.orchestration.tracking import RUN_ID_FILE, open_experiment, tracked_phase_cost
from nasplat.tasks import get_task
from nasplat.tracking import TrainingTracker
from nasplat.tracking.client import command_line
from nasplat.train import WorkerContext, run_training
from nasplat.train.checkpoint import continuation_problem, load_checkpoint, publish_supernet, supernet_checkpoint
from nasplat.train.data import ensure_data

log = logging.getLogger(__name__)


class TrainingMonitor:
    """The driver's view of training: logs step and epoch events to `<output_dir>/train_log.jsonl`
    and (if `mlflow`) to the experiment's MLflow training run (in MLflow experiment
    `experiment_id`, opened by the driver; None: opened here). An epoch event's val AP comes
    measured (its "val" entry, from `EpochEval` on rank 0): the monitor runs where the tracking
    store and the output directory are, which a Ray Train worker on another node may not reach."""

    def __init__(self, experiment: Experiment, *, mlflow: bool = True,
                 experiment_id: str | None = None, source: str | None = None) -> None:
        self.experiment = experiment
        self.recipe = recipe = experiment.trainer
        self.path = experiment.output_dir / "train_log.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last_eval: dict[str, float] = {}
        self._tracker: TrainingTracker | None = None
        if mlflow:
            self._tracker = TrainingTracker(experiment.tracking_uri, experiment.tracking_experiment,
                                            experiment.checkpoint_dir / RUN_ID_FILE,
                                            artifact_dir=experiment.artifact_location,
                                            experiment_id=experiment_id, source=source)
            self._tracker.start({
                "experiment": experiment.name, "space": experiment.space.name, "trainer": recipe.name,
                "seed": experiment.seed, "num_workers": experiment.cluster.num_workers,
                "batch_size": recipe.batch_size, "lr": recipe.optimizer.lr, "epochs": recipe.schedule.epochs,
                "sandwich_random": recipe.sandwich.num_random, "distillation": recipe.distillation.enabled,
            })
        self._last = max((at for at, _ in self._records()), default=(-1, 0))
        self._file = self.path.open("a")

    @staticmethod
    def _at(record: dict[str, Any]) -> tuple[int, int]:
        """Where a record is in training: (step, 0) for a step, (step, 1) for the epoch ending there."""
        return int(record["step"]), int(record["event"] == "epoch")

    def _records(self) -> list[tuple[tuple[int, int], str]]:
        """(position, line) of each whole record already in the log (a line cut off by a kill is skipped)."""
        out = []
        for line in self.path.read_text().splitlines() if self.path.is_file() else []:
            try:
                out.append((self._at(json.loads(line)), line))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def _write(self, record: dict[str, Any]) -> None:
        at = self._at(record)
        if at <= self._last:
            # training resumed from a checkpoint older than what was logged (stopped between an
            # epoch's record and Ray registering its checkpoint): the records from here on are of
            # work done again, so they go, and the log stays one history with no epoch twice
            self._file.close()
            atomic_write_text("".join(f"{line}\n" for pos, line in self._records() if pos < at), self.path)
            self._file = self.path.open("a")
        self._last = at
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def __call__(self, event: dict[str, Any]) -> None:
        metrics = {f"loss/{k}": v for k, v in event["losses"].items()}
        metrics["samples_per_s"] = event["samples_per_s"]
        if event["event"] == "step":
            if event["step"] % self.recipe.log_every_steps == 0:
                metrics["lr"] = event["lr"]
                if self._tracker is not None:
                    self._tracker.log_metrics(metrics, step=event["step"])
                self._write({"event": "step", "time": time.time(), "epoch": event["epoch"], "step": event["step"],
                             **metrics})
            return
        record: dict[str, Any] = {"event": "epoch", "time": time.time(), "epoch": event["epoch"], "step": event["step"],
                                  **{f"epoch_{k}": v for k, v in metrics.items()}}
        if event.get("val"):
            self.last_eval = dict(event["val"])
            record.update(self.last_eval)
        if self._tracker is not None:  # the wall-clock `time` is MLflow's own timestamp, not a metric
            self._tracker.log_metrics({k: v for k, v in record.items() if isinstance(v, float) and k != "time"},
                                      step=event["step"])
        self._write(record)

    def close(self) -> None:
        self._file.close()
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None


class EpochEval:
    """Rank 0's validation metrics at the end of every `eval.every_epochs`-th epoch (and the last):
    the max and min subnets of the network in training, scored by the task
    (`Task.epoch_metrics`: BN recalibrated, the task's metrics), logged as `val/<role>/<metric>`."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.recipe = experiment.trainer
        self.task = get_task(experiment.task)
        self._score: Callable[[Any], dict[str, float]] | None = None

    def due(self, epoch: int) -> bool:
        every = self.recipe.eval.every_epochs
        return every > 0 and (epoch % every == 0 or epoch == self.recipe.schedule.epochs)

    def __call__(self, event: dict[str, Any]) -> dict[str, float] | None:
        if event.get("event") != "epoch" or not self.due(int(event["epoch"])):
            return None
        if self._score is None:
            self._score = self.task.epoch_metrics(self.experiment, event["net"])
        out: dict[str, float] = {}
        space = self.experiment.space
        for role, arch in (("max", space.max_arch()), ("min", space.min_arch())):
            for name, value in self._score(arch).items():
                out[f"val/{role}/{name}"] = float(value)
        objective = self.task.objective
        log.info("val %s: max %.3f, min %.3f", objective, out[f"val/max/{objective}"], out[f"val/min/{objective}"])
        return out


@dataclass(frozen=True)
class EvalFactory:
    """Picklable: builds rank 0's `EpochEval` inside a Ray Train worker (None: no evaluation)."""

    evaluate: bool = True

    def __call__(self, experiment: Experiment) -> EpochEval | None:
        return EpochEval(experiment) if self.evaluate and experiment.trainer.eval.every_epochs > 0 else None


def _train_here(experiment: Experiment, monitor: TrainingMonitor, evaluate: EpochEval | None,
                progress: Callable[[dict[str, Any]], None] | None) -> Path:
    """One worker in this process, no Ray."""
    cluster = experiment.cluster
    device = "cuda" if cluster.use_gpu and torch.cuda.is_available() else "cpu"

    def both(event: dict[str, Any]) -> None:
        val = evaluate(event) if evaluate is not None else None
        if val:
            event = {**event, "val": val}
        monitor(event)
        if progress is not None:
            progress(event)

    path = run_training(experiment, WorkerContext(device=device, progress=both))
    if path is None:  # pragma: no cover - rank 0 always returns its checkpoint
        raise TrainingError("training finished without a checkpoint", source=str(experiment.path))
    publish_supernet(experiment, path)
    return path


def finished_training(experiment: Experiment) -> Path | None:
    """The supernet checkpoint when this experiment's training is finished: the store records the
    phase trained (or a later one) and the checkpoint (this node's copy) is of this space and
    number of workers, at the end of the recipe's last epoch. None: train or resume (a changed
    schedule, a checkpoint of another run, no record)."""
    state = Phases(experiment).current()
    done = {p.value for p in Phase if p.order >= Phase.TRAINED.order}
    if state is None or state.phase not in done:
        return None
    path = supernet_checkpoint(experiment)
    if path is None:
        return None
    try:
        payload = load_checkpoint(path)
    except TrainingError:
        return None  # unreadable: the training phase says so, or trains again
    same = continuation_problem(payload, experiment, experiment.cluster.num_workers) is None
    at_end = payload.get("epoch") == experiment.trainer.schedule.epochs and payload.get("batch_in_epoch") == 0
    return path if same and at_end else None


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
    `cluster.num_workers` workers on the Ray at `cluster.address` (None: a local Ray started for
    this phase; pass the experiment through `cluster.for_command` first). `progress(event)`
    receives every step and epoch event ({"event": "step" | "epoch", "epoch", "step", "losses",
    "samples_per_s", ...}; from Ray workers only `distributed.progress_message`'s fields, with
    losses {"total"}). The phase is recorded in the study store (training, then trained with the
    checkpoint), and so is its cost (`nasplat.store.costs`; with `mlflow` also on the current study's search run). Raises DataError, TrainingError, ConfigError, StoreError.
    """
    set_activity("training")
    ensure_data(experiment)
    finished = finished_training(experiment)
    if finished is not None:  # read, not run again: no Ray Train, no phase written
        log.info("the supernet of %s is trained (%s); nothing to do", experiment.name, finished)
        return finished
    phases = Phases(experiment)
    phases.mark(Phase.TRAINING)
    exp_id = open_experiment(experiment) if mlflow else None  # here, not in a Ray worker's cwd
    factory = EvalFactory(evaluate=evaluate)
    cluster = experiment.cluster
    gpus = cluster.num_workers if cluster.use_gpu else 0
    monitor = TrainingMonitor(experiment, mlflow=mlflow, experiment_id=exp_id, source=command_line())
    try:
        with tracked_phase_cost(experiment, "training", cpus=cluster.num_workers * cluster.cpus_per_worker, gpus=gpus,
                                track=mlflow):
            if cluster.num_workers == 1 and cluster.address is None:
                path = _train_here(experiment, monitor, factory(experiment), progress)
            else:
                from nasplat.train.distributed import train_with_ray  # Ray Train: only where it is used

                def on_event(event: dict[str, Any]) -> None:
                    monitor(event)
                    if progress is not None:
                        progress(event)

                with ray_session(cluster.address, num_cpus=max(cluster.num_workers * cluster.cpus_per_worker, 1),
                                 env=cluster.runtime_env):
                    path = train_with_ray(experiment, evaluate=factory, progress=on_event)
    finally:
        monitor.close()
    phases.mark(Phase.TRAINED, checkpoint=str(path))
    return path


__all__ = ["EpochEval", "EvalFactory", "TrainingMonitor", "finished_training", "train_supernet"]
