"""The supernet training loop: a plain function of an experiment, one process per worker.

`run_training(experiment, ctx)` is what each Ray Train worker runs (`nasplat.train.distributed`)
and what a one-worker local run calls directly. A `SupernetTrainer`:

- builds the supernet from the space (seeded) and broadcasts rank 0's weights;
- iterates a deterministic sharded sampler (order a function of (seed, epoch), shard by rank);
- per batch, runs the sandwich step (`nasplat.train.step`) for the members the sampler draws for
  that global step, all-reduces the accumulated gradients once, and steps the optimizer;
- writes a checkpoint every `checkpoint.every_steps` steps and at the end of every epoch, with
  everything needed to continue bit-for-bit (weights, optimizer, lr schedule position, RNG states,
  position in the epoch, sampler state);
- on start, resumes from the newest checkpoint (Ray's, when running under Ray, else the output
  directory's).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader

from nasplat.config import Experiment
from nasplat.errors import DataError, TrainingError
from nasplat.files import atomic_write_json
from nasplat.train.checkpoint import (
    CHECKPOINT_VERSION,
    LATEST,
    capture_rng_state,
    continuation_problem,
    copy_checkpoint,
    find_latest,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    supernet_payload,
)
from nasplat.tasks import get_task
from nasplat.train.data import ShardedEpochSampler
from nasplat.train.ddp import allreduce_gradients, allreduce_scalars, broadcast_module
from nasplat.train.precision import recipe_precision
from nasplat.train.sandwich import SandwichSampler
from nasplat.train.schedule import lr_at, make_optimizer, student_weight

log = logging.getLogger(__name__)

SUPERNET = "zoomnet"  # the zoomnas task's registered model (`nasplat.tasks.get_task("zoomnas").model`)


class Monitor(Protocol):
    """What rank 0 feeds with every training event besides the progress bar: the training log,
    MLflow, the per-epoch val AP (`nasplat.orchestration.training.TrainingMonitor`)."""

    def __call__(self, event: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


# Builds rank 0's monitor inside the worker process; picklable, so Ray can ship it.
MonitorFactory = Callable[[Experiment], Monitor]


@dataclass(frozen=True)
class WorkerContext:
    """Where this worker runs and how it reports (the Ray wrapper fills these)."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    # report(metrics, checkpoint_path or None) after every checkpoint; Ray's wrapper hands the
    # checkpoint to ray.train.report.
    report: Callable[[dict[str, float], Path | None], None] | None = None
    # A checkpoint to resume from that takes precedence over the output directory's.
    resume_from: Path | None = None
    # progress(event: dict) on rank 0 after every step and epoch (CLI progress bar, MLflow).
    progress: Callable[[dict[str, Any]], None] | None = None


def init_final_layers(net: torch.nn.Module, std: float, seed: int) -> None:
    """Normal(0, std) weights and zero bias for the heatmap convs (`body.final`, `face.final`,
    `hand.final`), drawn from a generator seeded by `seed` (the global RNG is not touched)."""
    gen = torch.Generator().manual_seed(int(seed) + 0xF1)
    with torch.no_grad():
        for name in ("body", "face", "hand"):
            final = getattr(getattr(net, name), "final")
            for p in final.parameters():
                if p.dim() > 1:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
                else:
                    p.zero_()


def _check_resume(payload: dict[str, Any], experiment: Experiment, world_size: int, path: Path) -> None:
    problem = continuation_problem(payload, experiment, world_size)
    if problem is not None:
        message, key = problem
        raise TrainingError(message, source=str(path), key=key)


class SupernetTrainer:
    """The state of one worker's training: network, optimizer, sandwich sampler, data, and the
    position (epoch, batch in epoch, global step, samples seen). `run()` trains to the end.

    Raises DataError (fewer training instances than one global batch) on construction.
    """

    def __init__(self, experiment: Experiment, ctx: WorkerContext | None = None) -> None:
        self.experiment = experiment
        self.ctx = ctx = ctx or WorkerContext()
        self.recipe = recipe = experiment.trainer
        self.device = torch.device(ctx.device)
        self.is_main = ctx.rank == 0
        if recipe.torch_threads is not None:
            torch.set_num_threads(recipe.torch_threads)
        torch.manual_seed(experiment.seed)
        self.task = task = get_task(experiment.task)
        net = task.build_supernet(experiment)
        self.precision = recipe_precision(recipe, self.device)
        self.net = self.precision.module(net.to(self.device))
        self.scaler = self.precision.grad_scaler()  # fp16 only
        broadcast_module(self.net)
        self.optimizer = make_optimizer(self.net.parameters(), recipe)
        sw = recipe.sandwich
        self.sampler = SandwichSampler(experiment.space, experiment.seed, sw.num_random, train_max=sw.train_max,
                                       train_min=sw.train_min, warmup_epochs=sw.warmup_epochs)
        self.dataset = task.train_dataset(experiment)
        self.steps_per_epoch = self._batches(epoch=0, skip=0).num_batches()
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{len(self.dataset)} training instances are fewer than one global batch "
                f"({recipe.batch_size} x {ctx.world_size} workers)",
                source=str(experiment.trainer_path), key="batch_size",
            )
        self.epoch = self.batch_in_epoch = self.step = self.samples = 0
        self.resumed_from_step: int | None = None
        # where the resumed checkpoint came from: "worker_context" (e.g. Ray Train's restore) or
        # "checkpoint_dir" (the output directory's newest); None when training started afresh
        self.resume_source: str | None = None
        self.latest: Path | None = None

    def _batches(self, epoch: int, skip: int) -> ShardedEpochSampler:
        return ShardedEpochSampler(len(self.dataset), self.recipe.batch_size, seed=self.experiment.seed, epoch=epoch,
                                   rank=self.ctx.rank, world_size=self.ctx.world_size, skip=skip,
                                   max_batches=self.recipe.max_steps_per_epoch)

    # --- checkpoints -----------------------------------------------------------------------
    def resume(self) -> None:
        """Continue from the context's checkpoint, else the output directory's newest, if any.
        Raises TrainingError for a checkpoint of another version, space or worker count."""
        path = self.ctx.resume_from or find_latest(self.experiment.checkpoint_dir)
        if path is None:
            return
        source = "worker_context" if self.ctx.resume_from is not None else "checkpoint_dir"
        payload = load_checkpoint(path, map_location=self.device)
        _check_resume(payload, self.experiment, self.ctx.world_size, path)
        self.net.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.sampler.load_state_dict(payload["sampler"])
        if self.scaler is not None and payload.get("scaler") is not None:
            self.scaler.load_state_dict(payload["scaler"])
        restore_rng_state(payload["rng"])
        self.epoch, self.batch_in_epoch = int(payload["epoch"]), int(payload["batch_in_epoch"])
        self.step, self.samples = int(payload["step"]), int(payload["samples"])
        self.resumed_from_step = self.step
        self.resume_source = source
        if source == "worker_context" and self.is_main:
            # the context's checkpoint lives in a scratch folder: the output directory gets it too,
            # so its latest checkpoint is the one training continues from (or ends with)
            path = copy_checkpoint(path, self.experiment.checkpoint_dir / LATEST)
        self.latest = path
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    def _payload(self) -> dict[str, Any]:
        return supernet_payload(self.experiment, self.net, optimizer=self.optimizer.state_dict(),
                                scaler=self.scaler.state_dict() if self.scaler is not None else None,
                                rng=capture_rng_state(), sampler=self.sampler.state_dict(), epoch=self.epoch,
                                batch_in_epoch=self.batch_in_epoch, step=self.step, samples=self.samples,
                                world_size=self.ctx.world_size)

    def checkpoint(self, numbered: bool, metrics: dict[str, float]) -> None:
        """Rank 0 writes the checkpoint of the current position; every rank reports (Ray)."""
        path = None
        if self.is_main:
            path = save_checkpoint(self.experiment.checkpoint_dir, self._payload(), step=self.step,
                                   keep=self.recipe.checkpoint.keep, numbered=numbered)
            self.latest = path
        if self.ctx.report is not None:
            self.ctx.report(metrics, path)

    # --- training --------------------------------------------------------------------------
    def _progress(self, event: dict[str, Any]) -> None:
        if self.is_main and self.ctx.progress is not None:
            self.ctx.progress(event)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One sandwich step on `batch` and one optimizer step. Returns the step's losses.
        Raises TrainingError when the loss is not finite."""
        recipe = self.recipe
        t0 = time.perf_counter()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        lr = lr_at(recipe, self.step, self.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logs = self.task.sandwich_step(self.net, batch, self.sampler.members(self.step, self.epoch), recipe,
                                       epoch=self.epoch,
                                       student_weight=student_weight(recipe, self.step, self.steps_per_epoch),
                                       precision=self.precision, scaler=self.scaler)
        allreduce_gradients(self.net.parameters())
        if self.scaler is not None:  # every rank sees the same reduced gradients: same skip decision
            self.scaler.unscale_(self.optimizer)
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), recipe.grad_clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped when the fp16 gradients overflowed
            self.scaler.update()
        self.step += 1
        self.batch_in_epoch += 1
        n = int(batch["image"].shape[0]) * self.ctx.world_size
        self.samples += n
        if not math.isfinite(logs["total"]):
            raise TrainingError(f"loss is {logs['total']} at step {self.step}; lower optimizer.lr or set grad_clip",
                                source=str(self.experiment.trainer_path), key="optimizer.lr")
        self._progress({"event": "step", "epoch": self.epoch, "step": self.step, "batch": self.batch_in_epoch,
                        "steps_per_epoch": self.steps_per_epoch, "lr": lr,
                        "samples_per_s": n / max(time.perf_counter() - t0, 1e-9), "losses": logs})
        return logs

    def train_epoch(self) -> None:
        """The rest of the current epoch (all of it unless resumed inside it), then its checkpoint."""
        recipe = self.recipe
        every = recipe.checkpoint.every_steps
        self.dataset.set_epoch(self.epoch)
        loader = DataLoader(self.dataset, batch_sampler=self._batches(self.epoch, self.batch_in_epoch),
                            collate_fn=self.task.collate, num_workers=recipe.loader_workers, persistent_workers=False)
        start, first_samples = time.perf_counter(), self.samples
        logs: dict[str, float] = {}
        for batch in loader:
            logs = self.train_step(batch)
            if every and self.step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                self.checkpoint(True, {"step": self.step, "epoch": self.epoch, "loss": logs["total"]})
        elapsed = time.perf_counter() - start
        self.epoch += 1
        self.batch_in_epoch = 0
        epoch_logs = allreduce_scalars(logs)
        self.checkpoint(bool(every), {"step": self.step, "epoch": self.epoch, "loss": epoch_logs.get("total", float("nan"))})
        self._progress({"event": "epoch", "epoch": self.epoch, "step": self.step, "losses": epoch_logs,
                        "samples_per_s": (self.samples - first_samples) / max(elapsed, 1e-9), "net": self.net})

    def run(self) -> Path | None:
        """Resume, train the remaining epochs, and on rank 0 write `final.json` beside the
        checkpoints. Returns the final checkpoint on rank 0, None elsewhere."""
        self.resume()
        self.net.train()
        while self.epoch < self.recipe.schedule.epochs:  # bounded: train_epoch increments epoch
            self.train_epoch()
        if not self.is_main:
            return None
        ckpt_dir = self.experiment.checkpoint_dir
        latest = self.latest or find_latest(ckpt_dir)  # nothing trained: the resumed one is final
        atomic_write_json({"checkpoint": str(latest), "epochs": self.epoch, "steps": self.step,
                           "samples": self.samples, "resumed_from_step": self.resumed_from_step,
                           "resume_source": self.resume_source},
                          ckpt_dir / "final.json")
        return latest


def run_training(experiment: Experiment, ctx: WorkerContext | None = None) -> Path | None:
    """Train (or resume) the supernet of `experiment` on this worker. Returns the final checkpoint
    path on rank 0 (None on other ranks).

    Raises TrainingError (an incompatible checkpoint, a non-finite loss) and DataError.
    """
    return SupernetTrainer(experiment, ctx).run()


__all__ = ["CHECKPOINT_VERSION", "SUPERNET", "Monitor", "MonitorFactory", "SupernetTrainer", "WorkerContext", "init_final_layers", "run_training"]
