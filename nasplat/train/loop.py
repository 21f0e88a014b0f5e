"""The supernet training loop: a plain function of an experiment, one process per worker.

`train_worker(config)` is what Ray Train calls on every worker (`config` is a plain dict), and what
a one-worker local run calls directly. The loop:

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

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from nasplat.errors import DataError, TrainingError
from nasplat.train.checkpoint import (
    atomic_write_text,
    capture_rng_state,
    find_latest,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from nasplat.train.config import Experiment, TrainerRecipe, load_experiment
from nasplat.train.ddp import allreduce_gradients, allreduce_scalars, broadcast_module
from nasplat.train.sandwich import SandwichSampler

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 2  # 2: heads keep one block of first-layer weights per feature stage


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


class ShardedEpochSampler(Sampler[list[int]]):
    """Batches of indices for one rank: a permutation of (seed, epoch), cut into global batches of
    `batch_size * world_size` (the last incomplete one dropped), rank r taking its slice of each.
    `skip` batches are left out at the start (resume inside an epoch)."""

    def __init__(self, n: int, batch_size: int, *, seed: int, epoch: int, rank: int, world_size: int,
                 skip: int = 0, max_batches: int | None = None) -> None:
        self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, epoch
        self.rank, self.world_size, self.skip = rank, world_size, skip
        self.max_batches = max_batches

    def num_batches(self) -> int:
        full = self.n // (self.batch_size * self.world_size)
        return min(full, self.max_batches) if self.max_batches else full

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch, 0xBA7C]).permutation(self.n)
        g = self.batch_size * self.world_size
        for b in range(self.skip, self.num_batches()):
            chunk = order[b * g : (b + 1) * g]
            yield chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return max(0, self.num_batches() - self.skip)


def ensure_data(experiment: Experiment) -> None:
    """Generate the synthetic data set if the experiment asks for one and it is absent.

    Raises DataError naming `data.root` when there is no data and nothing to generate.
    """
    from nasplat.data.coco import annotation_path

    root = experiment.data.root
    if annotation_path(root, "train").is_file() and annotation_path(root, "val").is_file():
        return
    syn = experiment.data.synthetic
    if syn is None:
        raise DataError(
            f"no COCO-WholeBody annotations under {root} and no `data.synthetic` section to generate them",
            source=str(experiment.path),
            key="data.root",
        )
    from nasplat.data.synth import SynthConfig, generate_dataset

    log.info("generating synthetic data (%d train / %d val images) into %s", syn.train, syn.val, root)
    config = SynthConfig(hand_length=syn.hand_length, face_width=syn.face_width)
    generate_dataset(root, syn.train, syn.val, seed=syn.seed, config=config)


def _augment(recipe: TrainerRecipe) -> Any:
    from nasplat.data.transforms import AugmentParams

    a = recipe.augmentation
    return AugmentParams(
        scale_factor=a.scale,
        rotation_deg=a.rotation,
        rotation_prob=a.rotation_prob,
        flip_prob=0.5 if a.flip else 0.0,
    )


def train_dataset(experiment: Experiment, *, augment: bool = True) -> Any:
    """The training crops at the space's largest body resolution."""
    from nasplat.data.coco import load_split, train_instances
    from nasplat.data.topdown import TopDownDataset

    ann = load_split(experiment.data.root, "train")
    return TopDownDataset(
        train_instances(ann),
        ann,
        experiment.space.max_arch().body.input_size,
        sigma=experiment.trainer.heatmap_sigma,
        box_sigma=experiment.trainer.box_sigma,
        augment=_augment(experiment.trainer) if augment else None,
        seed=experiment.seed,
    )


# ------------------------------------------------------------------------------------------------
# Optimizer and schedule
# ------------------------------------------------------------------------------------------------


def make_optimizer(params: Any, recipe: TrainerRecipe) -> torch.optim.Optimizer:
    o = recipe.optimizer
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def lr_at(recipe: TrainerRecipe, step: int, steps_per_epoch: int) -> float:
    """Learning rate at global step `step`: linear warmup, then x gamma at every milestone epoch."""
    s = recipe.schedule
    epoch = step // max(steps_per_epoch, 1)
    lr = recipe.optimizer.lr * s.gamma ** sum(1 for m in s.milestones if epoch >= m)
    if s.warmup_steps and step < s.warmup_steps:
        frac = step / s.warmup_steps
        lr *= s.warmup_ratio + (1 - s.warmup_ratio) * frac
    return lr


def student_weight(recipe: TrainerRecipe, step: int, steps_per_epoch: int) -> float:
    """The sandwich students' loss weight at global step `step`: 0 during the max-only warmup,
    then rising linearly to 1 over `sandwich.ramp_epochs` epochs."""
    sw = recipe.sandwich
    start = sw.warmup_epochs * steps_per_epoch
    ramp = sw.ramp_epochs * steps_per_epoch
    if step < start:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - start + 1) / ramp)


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


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


def _device(ctx: WorkerContext) -> torch.device:
    return torch.device(ctx.device)


def module_to(net: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """`net.to(device)` that also works for a supernet whose own `_apply(arch)` shadows
    nn.Module._apply (the base implementation recurses into the children directly)."""
    if any(t.device != torch.device(device) for t in list(net.parameters()) + list(net.buffers())):
        torch.nn.Module._apply(net, lambda t: t.to(device))
    return net


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


def _payload(net: Any, optimizer: torch.optim.Optimizer, sampler: SandwichSampler, *, epoch: int, batch_in_epoch: int,
             step: int, samples: int, experiment: Experiment, world_size: int) -> dict[str, Any]:
    return {
        "version": CHECKPOINT_VERSION,
        "experiment": experiment.name,
        "space_fingerprint": experiment.space.fingerprint(),
        "supernet_config": json.dumps(net.config.to_dict()),
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"kind": "multistep_warmup", "step": step},
        "rng": capture_rng_state(),
        "sampler": sampler.state_dict(),
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "step": step,
        "samples": samples,
        "world_size": world_size,
        "seed": experiment.seed,
    }


def _check_resume(payload: dict[str, Any], experiment: Experiment, world_size: int, path: Path) -> None:
    if payload.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"checkpoint version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}", source=str(path))
    if payload.get("space_fingerprint") != experiment.space.fingerprint():
        raise TrainingError(
            "checkpoint was trained on another search space; use a new output_dir or the original space",
            source=str(path), key="space",
        )
    if payload.get("world_size") != world_size:
        raise TrainingError(
            f"checkpoint was written by {payload.get('world_size')} workers, this run has {world_size};"
            " resume with the same cluster.num_workers",
            source=str(path), key="cluster.num_workers",
        )


def run_training(experiment: Experiment, ctx: WorkerContext | None = None) -> Path | None:
    """Train (or resume) the supernet of `experiment` on this worker. Returns the final checkpoint
    path on rank 0 (None on other ranks).

    Raises TrainingError (an incompatible checkpoint) and DataError (missing data).
    """
    from nasplat.data.topdown import collate
    from nasplat.models import build_supernet
    from nasplat.train.step import sandwich_step

    ctx = ctx or WorkerContext()
    recipe = experiment.trainer
    device = _device(ctx)
    ckpt_dir = experiment.checkpoint_dir
    is_main = ctx.rank == 0

    if recipe.torch_threads is not None:
        torch.set_num_threads(recipe.torch_threads)
    torch.manual_seed(experiment.seed)
    supernet = build_supernet(experiment.space, seed=experiment.seed)
    if recipe.final_init_std is not None:
        init_final_layers(supernet, recipe.final_init_std, experiment.seed)
    net = module_to(supernet, device)
    broadcast_module(net)
    optimizer = make_optimizer(net.parameters(), recipe)
    sampler = SandwichSampler(
        experiment.space, experiment.seed, recipe.sandwich.num_random,
        train_max=recipe.sandwich.train_max, train_min=recipe.sandwich.train_min,
        warmup_epochs=recipe.sandwich.warmup_epochs,
    )
    dataset = train_dataset(experiment)
    probe = ShardedEpochSampler(len(dataset), recipe.batch_size, seed=experiment.seed, epoch=0, rank=ctx.rank,
                                world_size=ctx.world_size, max_batches=recipe.max_steps_per_epoch)
    steps_per_epoch = probe.num_batches()
    if steps_per_epoch == 0:
        raise DataError(
            f"{len(dataset)} training instances are fewer than one global batch "
            f"({recipe.batch_size} x {ctx.world_size} workers)",
            source=str(experiment.trainer_path), key="batch_size",
        )

    epoch, batch_in_epoch, step, samples = 0, 0, 0, 0
    resumed_from_step: int | None = None
    resume = ctx.resume_from or find_latest(ckpt_dir)
    if resume is not None:
        payload = load_checkpoint(resume, map_location=device)
        _check_resume(payload, experiment, ctx.world_size, resume)
        net.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        sampler.load_state_dict(payload["sampler"])
        restore_rng_state(payload["rng"])
        epoch, batch_in_epoch = int(payload["epoch"]), int(payload["batch_in_epoch"])
        step, samples = int(payload["step"]), int(payload["samples"])
        resumed_from_step = step
        log.info("resumed from %s at epoch %d, step %d", resume, epoch, step)
    latest: Path | None = resume

    def checkpoint(numbered: bool, metrics: dict[str, float]) -> None:
        nonlocal latest
        path = None
        if is_main:
            payload = _payload(net, optimizer, sampler, epoch=epoch, batch_in_epoch=batch_in_epoch, step=step,
                               samples=samples, experiment=experiment, world_size=ctx.world_size)
            path = save_checkpoint(ckpt_dir, payload, step=step, keep=recipe.checkpoint.keep, numbered=numbered)
            latest = path
        if ctx.report is not None:
            ctx.report(metrics, path)

    net.train()
    every = recipe.checkpoint.every_steps
    while epoch < recipe.schedule.epochs:  # bounded: epoch strictly increases below
        dataset.set_epoch(epoch)
        batches = ShardedEpochSampler(len(dataset), recipe.batch_size, seed=experiment.seed, epoch=epoch,
                                      rank=ctx.rank, world_size=ctx.world_size, skip=batch_in_epoch,
                                      max_batches=recipe.max_steps_per_epoch)
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=recipe.loader_workers,
                            persistent_workers=False)
        epoch_start = time.perf_counter()
        epoch_samples = 0
        logs: dict[str, float] = {}
        for batch in loader:
            t0 = time.perf_counter()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            lr = lr_at(recipe, step, steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            logs = sandwich_step(net, batch, sampler.members(step, epoch), recipe, epoch=epoch,
                                 student_weight=student_weight(recipe, step, steps_per_epoch))
            allreduce_gradients(net.parameters())
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.grad_clip)
            optimizer.step()
            step += 1
            batch_in_epoch += 1
            n = int(batch["image"].shape[0]) * ctx.world_size
            samples += n
            epoch_samples += n
            if not math.isfinite(logs["total"]):
                raise TrainingError(f"loss is {logs['total']} at step {step}; lower optimizer.lr or set grad_clip",
                                    source=str(experiment.trainer_path), key="optimizer.lr")
            if is_main and ctx.progress is not None:
                dt = time.perf_counter() - t0
                ctx.progress({"event": "step", "epoch": epoch, "step": step, "batch": batch_in_epoch,
                              "steps_per_epoch": steps_per_epoch, "lr": lr, "samples_per_s": n / max(dt, 1e-9),
                              "losses": logs})
            if every and step % every == 0 and batch_in_epoch < steps_per_epoch:
                checkpoint(True, {"step": step, "epoch": epoch, "loss": logs["total"]})
        elapsed = time.perf_counter() - epoch_start
        epoch += 1
        batch_in_epoch = 0
        epoch_logs = allreduce_scalars(logs)
        checkpoint(bool(every), {"step": step, "epoch": epoch, "loss": epoch_logs.get("total", float("nan"))})
        if is_main and ctx.progress is not None:
            ctx.progress({"event": "epoch", "epoch": epoch, "step": step, "losses": epoch_logs,
                          "samples_per_s": epoch_samples / max(elapsed, 1e-9), "net": net})
    if is_main:
        if latest is None:  # nothing left to train: the checkpoint we resumed from is final
            latest = find_latest(ckpt_dir)
        atomic_write_text(
            json.dumps({"checkpoint": str(latest), "epochs": epoch, "steps": step, "samples": samples,
                        "resumed_from_step": resumed_from_step}, indent=2),
            ckpt_dir / "final.json",
        )
        return latest
    return None


def train_worker(config: dict[str, Any]) -> None:
    """Ray-free entry point with a plain config dict: {"experiment": path, "device": str}."""
    experiment = load_experiment(config["experiment"])
    run_training(experiment, WorkerContext(device=config.get("device", "cpu")))


__all__ = [
    "ShardedEpochSampler",
    "WorkerContext",
    "ensure_data",
    "lr_at",
    "make_optimizer",
    "run_training",
    "train_dataset",
    "train_worker",
]
