"""Retraining one searched subnet as a static model (what each Ray Tune trial of the retrain
phase runs; the Tune wiring is `nasplat.orchestration.retrain`).

`SubnetRetrainer(experiment, arch, recipe, init=...)` starts from the supernet's sliced weights
(`inherited`, the BigNAS practice) or from a fresh initialisation (`scratch`, the paper's),
trains the static subnet with the supernet's own step (`train.step.sandwich_step` with one
member, the max role: the same joint GT loss, heatmaps and GT-box fallback, no students and no
distillation), and evaluates it after every epoch with the search's `SubnetEvaluator` (BN
recalibrated, the whole val set), so the AP before retraining is the one the search measured.

A retrained static subnet is handed to `export_subnet` as a supernet checkpoint:
`into_supernet` writes its weights back into the supernet at the places `extract` copies them
from (found by extracting a twin whose every element holds its own index), so the export reads
exactly the retrained weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from nasplat.config import Experiment, TrainerRecipe
from nasplat.data.topdown import collate
from nasplat.errors import ArchError, TrainingError
from nasplat.models import build_static
from nasplat.space import Arch
from nasplat.subnet.evaluator import SubnetEvaluator, latest_checkpoint, load_supernet
from nasplat.train.checkpoint import capture_rng_state, restore_rng_state
from nasplat.train.data import ShardedEpochSampler, train_dataset
from nasplat.train.loop import init_final_layers
from nasplat.train.precision import recipe_precision
from nasplat.train.sandwich import SandwichMember
from nasplat.train.schedule import lr_at, make_optimizer
from nasplat.train.step import sandwich_step

RETRAIN_VERSION = 1
PARTS = ("body", "foot", "face", "hand", "wholebody")


def retrain_recipe(experiment: Experiment, lr: float | None = None) -> TrainerRecipe:
    """The recipe a retrain trial runs: `retrain.trainer` (else the experiment's trainer) with
    `retrain.epochs`, `retrain.milestones` and, when given, the learning rate `lr`. The sandwich
    settings are unused (one subnet per step)."""
    rc = experiment.retrain
    base = experiment.retrain_trainer or experiment.trainer
    if rc is None:
        return base
    schedule = dataclasses.replace(base.schedule, epochs=rc.epochs, milestones=tuple(rc.milestones))
    optimizer = base.optimizer if lr is None else dataclasses.replace(base.optimizer, lr=float(lr))
    return dataclasses.replace(base, schedule=schedule, optimizer=optimizer)


class FixedArch(nn.Module):
    """A static subnet with the supernet's `set_arch` interface (only its own arch is allowed), so
    the supernet's training step and the evaluator run it unchanged."""

    def __init__(self, static: nn.Module) -> None:
        super().__init__()
        self.static = static
        self.arch: Arch = static.arch

    def set_arch(self, arch: Arch) -> None:
        if arch != self.arch:
            raise ArchError("a retrained static subnet runs only its own arch")

    def forward_body(self, images: torch.Tensor) -> Any:
        return self.static.forward_body(images)

    def forward_heads(self, features: list[torch.Tensor], part_boxes: torch.Tensor, input_size: tuple[int, int]) -> Any:
        return self.static.forward_heads(features, part_boxes, input_size)

    def forward(self, images: torch.Tensor, part_boxes: torch.Tensor | None = None) -> Any:
        return self.static(images, part_boxes)


def flat_metrics(metrics: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """{part: {"AP", "AR"}} as flat floats: `<prefix><part>_ap`, `<prefix><part>_ar`."""
    out: dict[str, float] = {}
    for part in PARTS:
        m = metrics.get(part, {})
        out[f"{prefix}{part}_ap"] = float(m.get("AP", float("nan")))
        out[f"{prefix}{part}_ar"] = float(m.get("AR", float("nan")))
    return out


class SubnetRetrainer:
    """One subnet's retraining: the static network, its optimizer, position (epoch, step) and the
    per-epoch val metrics. `state_dict` / `load_state_dict` are what a Tune checkpoint holds.

    Raises TrainingError (no supernet checkpoint, a non-finite loss) and DataError (no data).
    """

    def __init__(self, experiment: Experiment, arch: Arch, recipe: TrainerRecipe, *, init: str = "inherited",
                 device: str = "cpu", checkpoint: Path | None = None) -> None:
        experiment.space.validate(arch)
        self.experiment, self.arch, self.recipe, self.init = experiment, arch, recipe, init
        self.device = torch.device(device)
        if recipe.torch_threads is not None:
            torch.set_num_threads(recipe.torch_threads)
        torch.manual_seed(experiment.seed)
        self.checkpoint = checkpoint or latest_checkpoint(experiment)
        supernet, _ = load_supernet(self.checkpoint, "cpu")
        if init == "inherited":
            static = supernet.extract(arch)
        else:
            static = build_static(arch, supernet.config.blocks_per_module, seed=experiment.seed,
                                  sampling_ratio=supernet.sampling_ratio)
            if recipe.final_init_std is not None:
                init_final_layers(static, recipe.final_init_std, experiment.seed)
        # the recipe's memory layout, as the supernet trained (the step lays out the inputs alike)
        self.net = FixedArch(recipe_precision(recipe, self.device).module(static.to(self.device)))
        self.optimizer = make_optimizer(self.net.parameters(), recipe)
        self.dataset = train_dataset(experiment)
        self.steps_per_epoch = self._batches(0).num_batches()
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.dataset)} training instances are fewer than one batch ({recipe.batch_size})",
                                key="batch_size")
        experiment_for_eval = dataclasses.replace(experiment, trainer=recipe)
        self.evaluator = SubnetEvaluator(experiment_for_eval, device, net=self.net, checkpoint=self.checkpoint)
        self.epoch = self.step = 0
        self.history: list[dict[str, float]] = []  # per epoch: loss and flat metrics
        self.initial: dict[str, float] | None = None  # flat metrics before retraining

    def _batches(self, epoch: int) -> ShardedEpochSampler:
        return ShardedEpochSampler(len(self.dataset), self.recipe.batch_size, seed=self.experiment.seed, epoch=epoch,
                                   rank=0, world_size=1, max_batches=self.recipe.max_steps_per_epoch)

    def evaluate(self) -> dict[str, float]:
        """Flat per-part AP / AR of the current weights on the val set (BN recalibrated)."""
        return flat_metrics(self.evaluator.evaluate(self.arch)["metrics"])

    def evaluate_initial(self) -> dict[str, float]:
        """The metrics before any retraining (inherited or scratch weights); kept in the state."""
        if self.initial is None:
            self.initial = self.evaluate()
        return self.initial

    def train_epoch(self) -> float:
        """One epoch of the static subnet; returns the mean loss. Raises TrainingError when the
        loss is not finite."""
        recipe = self.recipe
        self.dataset.set_epoch(self.epoch)
        loader = DataLoader(self.dataset, batch_sampler=self._batches(self.epoch), collate_fn=collate,
                            num_workers=recipe.loader_workers)
        member = [SandwichMember("max", self.arch)]
        self.net.train()
        losses = []
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(recipe, self.step, self.steps_per_epoch)
            self.optimizer.zero_grad(set_to_none=True)
            logs = sandwich_step(self.net, batch, member, recipe, epoch=self.epoch)
            if recipe.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), recipe.grad_clip)
            self.optimizer.step()
            self.step += 1
            if not math.isfinite(logs["total"]):
                raise TrainingError(f"retraining loss is {logs['total']} at step {self.step}; lower retrain.lr",
                                    source=str(self.experiment.path), key="retrain.lr")
            losses.append(logs["total"])
        self.epoch += 1
        return sum(losses) / max(len(losses), 1)

    def run_epoch(self) -> dict[str, float]:
        """Train one epoch and evaluate: {"epoch", "loss", per-part AP/AR, "initial_*"}."""
        initial = self.evaluate_initial()
        loss = self.train_epoch()
        row = {"epoch": float(self.epoch), "loss": loss, **self.evaluate()}
        self.history.append(row)
        return {**row, **{f"initial_{k}": v for k, v in initial.items()}}

    # --- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies, not views of the live tensors) of everything `load_state_dict`
        needs to continue exactly."""
        return {
            "version": RETRAIN_VERSION,
            "arch": self.arch.to_json(),
            "init": self.init,
            "model": {k: v.detach().cpu().clone() for k, v in self.net.static.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "epoch": self.epoch,
            "step": self.step,
            "rng": capture_rng_state(),
            "history": list(self.history),
            "initial": self.initial,
        }

    def load_state_dict(self, payload: dict[str, Any], source: str = "") -> None:
        """Continue from `state_dict()`. Raises TrainingError for another version or arch."""
        if payload.get("version") != RETRAIN_VERSION or payload.get("arch") != self.arch.to_json():
            raise TrainingError("retrain checkpoint of another version or subnet", source=source or None)
        self.net.static.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        restore_rng_state(payload["rng"])
        self.epoch, self.step = int(payload["epoch"]), int(payload["step"])
        self.history = [dict(r) for r in payload["history"]]
        self.initial = dict(payload["initial"]) if payload.get("initial") is not None else None


def into_supernet(supernet: nn.Module, arch: Arch, static_state: dict[str, torch.Tensor]) -> None:
    """Write a static subnet's weights (its `state_dict`) into `supernet` where `extract(arch)`
    reads them, so `supernet.extract(arch)` returns exactly those weights afterwards.

    The places are found on a float64 twin of the supernet whose every floating-point element
    holds its own index: the twin's extracted subnet then names, per element, its source.
    Raises TrainingError when the state does not fit the arch's extracted subnet.
    """
    twin = copy.deepcopy(supernet).double()
    sources: list[torch.Tensor] = [t for t in twin.state_dict(keep_vars=True).values() if t.is_floating_point()]
    offset = 0
    with torch.no_grad():
        for t in sources:
            t.copy_(torch.arange(offset, offset + t.numel(), dtype=torch.float64).view_as(t))
            offset += t.numel()
    traced = twin.extract(arch).state_dict()
    targets = [t for t in supernet.state_dict(keep_vars=True).values() if t.is_floating_point()]
    flat = torch.cat([t.detach().reshape(-1).double() for t in targets])
    for name, ids in traced.items():
        if not ids.is_floating_point():
            continue
        if name not in static_state or static_state[name].shape != ids.shape:
            raise TrainingError(f"retrained weights do not fit the subnet ({name})")
        index = ids.reshape(-1).long()
        if not torch.equal(index.double(), ids.reshape(-1)) or index.min() < 0 or index.max() >= offset:
            raise TrainingError(f"cannot trace {name} of the subnet back to the supernet")
        flat[index] = static_state[name].reshape(-1).double()
    start = 0
    with torch.no_grad():
        for t in targets:
            t.copy_(flat[start : start + t.numel()].view_as(t).to(t.dtype))
            start += t.numel()


__all__ = ["PARTS", "FixedArch", "SubnetRetrainer", "flat_metrics", "into_supernet", "retrain_recipe"]
