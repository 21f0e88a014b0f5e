"""The Task contract: what a task (a model family, its data and its metric) gives the platform.

The platform (the generic training loop, the per-epoch evaluation, the experiment loader) asks
`nasplat.tasks.get_task(experiment.task)` for everything that depends on the task and names no
task itself. A task is one class in its own package (`nasplat/tasks/<name>/`), registered by name
in the import list of `nasplat.tasks.registry` (or, outside nasplat, under the `nasplat.tasks`
entry-point group), and implements:

- its **space**: `load_space(path)` returns an object with the search-space surface the
  searchers and the sandwich sampler use (`name`, `dimensions`, `choices_for`, `max_arch`,
  `min_arch`, `sample(rng)`, `mutate`, `crossover`, `encode`, `decode`, `validate`, `load_arch`,
  `fingerprint`, `pinned`, `log10_size`), whose archs are frozen, hashable, JSON-able dataclasses
  with `to_json()` / `from_json()` / `key()`; `gflops(experiment)` (arch -> GFLOPs by part, the
  `cost_parts`, `total` among them) and `params(experiment)`;
- its **data**: `data_file` (the schema of the experiment's `data:` section), `data_config`
  (the section loaded, paths resolved), `ensure_data` (generate or fetch the data on this node),
  `train_dataset` (items are dicts of tensors with `"image"` at the space's largest input size,
  and `set_epoch(epoch)`) and `collate`;
- its **supernet**: `build_supernet(experiment)` (seeded by `experiment.seed`; `set_arch(arch)`,
  `extract(arch)`, `config.to_dict()`), and `supernet_from_config` to rebuild one from a
  checkpoint's own arguments;
- its **training step**: `sandwich_step(net, batch, members, recipe, ...)`, forward and backward of
  every sandwich member, accumulating gradients; the loop zeroes, all-reduces and steps;
- its **evaluation**: `metrics` (names and directions; `objective` is the one the search
  maximises) and `epoch_metrics(experiment, net)`, what the training loop logs after an epoch;
- its **search and export** (when `phases` has "search"): `search_objectives` and
  `objective_factory` (what evaluates an arch in the search's evaluator processes), `export` and
  `load_exported` (the chosen subnet as a standalone model, ONNX included).

Checkpoints record `task` and `model_name` (`Task.model`, the registered supernet builder).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # the contract's signatures only: a task module imports what it uses itself
    import torch
    from torch import nn

    from nasplat.config import Experiment
    from nasplat.config.recipe import TrainerRecipe
    from nasplat.train.precision import Precision
    from nasplat.train.sandwich import SandwichMember

__all__ = ["PHASES", "Metric", "Task"]

PHASES = ("search", "retrain", "subnet", "latency")


@dataclass(frozen=True)
class Metric:
    """One number a task's evaluation reports for a subnet."""

    name: str  # the key in the evaluation's metrics, the store and MLflow (`top1`, `wholebody_AP`)
    direction: Literal["maximize", "minimize"]
    description: str


class Task(ABC):
    """A task the platform searches networks for. Subclasses set the class attributes and
    implement the abstract methods; instances hold no state (one per process, cached by the
    registry)."""

    name: ClassVar[str]  # the experiment's `task:`
    model: ClassVar[str]  # the supernet builder's name in `nasplat.models` (recorded in checkpoints)
    metrics: ClassVar[tuple[Metric, ...]]
    objective: ClassVar[str]  # the metric the search maximises; one of `metrics`
    cost_parts: ClassVar[tuple[str, ...]]  # what `gflops` returns and a budget may name; "total" last
    data_file: ClassVar[type]  # pydantic dataclass: the experiment's `data:` section as written
    # The phases after training that run for this task (`PHASES`): "search" (the search and the
    # export of its best subnet: `nasplat search`, `nasplat run`), "retrain" (a `retrain:`
    # section, `nasplat retrain`, `nasplat validate`), "subnet" (`nasplat subnet eval / export`),
    # "latency" (a latency table, latency budgets). A command that needs one the task lacks stops
    # with one line before anything is written.
    phases: ClassVar[frozenset[str]] = frozenset()
    # The objectives `search.objective` may name (`objective_factory`); the first is the default.
    search_objectives: ClassVar[tuple[str, ...]] = ()

    # --- space ------------------------------------------------------------------------------
    @abstractmethod
    def load_space(self, path: Path) -> Any:
        """The search space of a space file. Raises ConfigError naming the file and key."""

    @abstractmethod
    def gflops(self, experiment: Experiment) -> Callable[[Any], Mapping[str, float]]:
        """arch -> GFLOPs (multiply-adds of convs and linear layers / 2**30) by `cost_parts`, for
        the experiment's space and data (a classifier's last layer depends on its classes)."""

    @abstractmethod
    def params(self, experiment: Experiment) -> Callable[[Any], int]:
        """arch -> parameter count of its static subnet."""

    # --- data -------------------------------------------------------------------------------
    @abstractmethod
    def data_config(self, raw: Any, base: Path, file: Path) -> Any:
        """The `data:` section (`raw`, a `data_file`) loaded: paths resolved against `base`, the
        experiment file's folder. Raises ConfigError naming `file` and the key."""

    @abstractmethod
    def ensure_data(self, experiment: Experiment) -> None:
        """Make the experiment's data readable on this node (generate synthetic data, copy a
        remote data set). Raises DataError."""

    @abstractmethod
    def train_dataset(self, experiment: Experiment, *, augment: bool = True) -> torch.utils.data.Dataset:
        """The training set: dict items with "image" [3, H, W] at the space's largest input
        size; `set_epoch(epoch)` reseeds its augmentation. Raises DataError."""

    @abstractmethod
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """A batch of `train_dataset` items."""

    # --- supernet ---------------------------------------------------------------------------
    @abstractmethod
    def build_supernet(self, experiment: Experiment) -> nn.Module:
        """A freshly initialised supernet for the experiment's space and data, seeded by
        `experiment.seed` (the same seed gives the same weights)."""

    @abstractmethod
    def supernet_from_config(self, config: Mapping[str, Any]) -> nn.Module:
        """The supernet whose `config.to_dict()` is `config` (a checkpoint's own arguments)."""

    # --- training ---------------------------------------------------------------------------
    @abstractmethod
    def sandwich_step(
        self,
        net: nn.Module,
        batch: dict[str, torch.Tensor],
        members: list[SandwichMember],
        recipe: TrainerRecipe,
        *,
        epoch: int,
        student_weight: float,
        precision: Precision,
        scaler: torch.amp.GradScaler | None,
    ) -> dict[str, float]:
        """Forward and backward every member (teacher first) on `batch`, accumulating gradients;
        the students' losses scaled by `student_weight`. Returns the losses by name, "total"
        among them. The caller zeroes the gradients before and steps after."""

    # --- evaluation -------------------------------------------------------------------------
    @abstractmethod
    def epoch_metrics(self, experiment: Experiment, net: nn.Module) -> Callable[[Any], dict[str, float]]:
        """A scorer for the network in training: arch -> {metric name: value} on the validation
        data (BN statistics recalibrated for the arch and restored afterwards). Built once per
        training run, called at the end of an evaluated epoch for the max and min subnets."""

    # --- search and export (the "search" phase) ---------------------------------------------
    def objective_factory(self, experiment: Experiment, name: str, device: str) -> Callable[[], Any]:
        """The picklable factory of the search objective `name` (one of `search_objectives`): called
        once in each evaluator process (on any node; the experiment travels by value), it returns
        an `nasplat.search.Objective` whose `evaluate(arch)` gives an `Evaluation` with
        `objective` this task's `objective` and `gflops` its `cost_parts`."""
        raise NotImplementedError(f"task {self.name!r} has no search")

    def export(self, experiment: Experiment, arch: Any, out: Path, **options: Any) -> dict[str, Any]:
        """Write the export folder `out` of `arch` (nasplat.subnet.export's file names: weights,
        arch, ONNX graph, model card, and `meta.json` last, with `task` and `model_name`) from the
        trained supernet, and return its meta. `options`: `checkpoint`, `net`, `origin`, `onnx`."""
        raise NotImplementedError(f"task {self.name!r} has no export")

    def load_exported(self, directory: Path) -> nn.Module:
        """The static network of an export folder this task wrote (weights loaded, eval mode)."""
        raise NotImplementedError(f"task {self.name!r} has no export")
