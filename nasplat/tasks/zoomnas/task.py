"""ZoomNAS as a `Task`: the pose space, ZoomNet, COCO-WholeBody data, the heatmap sandwich step
and the official whole-body AP.

The pose code still lives in the rooms it was written in (`space`, `models`, `flops`, `data`,
`metrics`, `train.step`, `train.data`, `subnet.evaluator`); this class is the one place the
platform reaches it through.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasplat.config import Experiment, TrainerRecipe
from nasplat.config.experiment import DataConfig, DataFile, wholebody_data_config
from nasplat.data.topdown import collate
from nasplat.models import create_model
from nasplat.models.zoomnet import SupernetConfig, ZoomNetSupernet
from nasplat.search.cost import gflops_parts, params_fn
from nasplat.search.objectives import AnalyticFactory
from nasplat.space import SearchSpace, load_space
from nasplat.subnet.evaluator import SubnetEvaluator
from nasplat.subnet.export import export_subnet, load_exported
from nasplat.subnet.objective import WholeBodyFactory
from nasplat.tasks.base import PHASES, Metric, Task
from nasplat.train.data import ensure_wholebody_data, train_dataset
from nasplat.train.loop import init_final_layers
from nasplat.train.precision import Precision
from nasplat.train.sandwich import SandwichMember
from nasplat.train.step import sandwich_step

__all__ = ["ZoomNASTask"]

_PARTS = ("body", "foot", "face", "hand", "wholebody")


class ZoomNASTask(Task):
    """Whole-body pose estimation searched as in the ZoomNAS paper."""

    name = "zoomnas"
    model = "zoomnet"
    metrics = tuple(Metric(f"{part}_AP", "maximize", f"OKS AP of the {part} keypoints (COCO-WholeBody)")
                    for part in _PARTS)
    objective = "wholebody_AP"
    cost_parts = ("body", "face", "hand", "total")
    data_file = DataFile
    phases = frozenset(PHASES)
    search_objectives = ("wholebody", "analytic")

    def load_space(self, path: Path) -> SearchSpace:
        return load_space(path)

    def gflops(self, experiment: Experiment) -> Callable[[Any], Mapping[str, float]]:
        return gflops_parts(experiment.space)

    def params(self, experiment: Experiment) -> Callable[[Any], int]:
        return params_fn(experiment.space)

    def data_config(self, raw: DataFile, base: Path, file: Path) -> DataConfig:
        return wholebody_data_config(raw, base, file)

    def ensure_data(self, experiment: Experiment) -> None:
        ensure_wholebody_data(experiment)

    def train_dataset(self, experiment: Experiment, *, augment: bool = True) -> torch.utils.data.Dataset:
        return train_dataset(experiment, augment=augment)

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(list(items))

    def build_supernet(self, experiment: Experiment) -> nn.Module:
        net = create_model(self.model, experiment.space, seed=experiment.seed)
        std = experiment.trainer.final_init_std
        if std is not None:
            init_final_layers(net, std, experiment.seed)
        return net

    def supernet_from_config(self, config: Mapping[str, Any]) -> nn.Module:
        return ZoomNetSupernet(SupernetConfig.from_dict(dict(config)))

    def sandwich_step(self, net: nn.Module, batch: dict[str, torch.Tensor], members: list[SandwichMember],
                      recipe: TrainerRecipe, *, epoch: int, student_weight: float, precision: Precision,
                      scaler: torch.amp.GradScaler | None) -> dict[str, float]:
        return sandwich_step(net, batch, members, recipe, epoch=epoch, student_weight=student_weight,
                             precision=precision, scaler=scaler)

    def epoch_metrics(self, experiment: Experiment, net: nn.Module) -> Callable[[Any], dict[str, float]]:
        evaluator = SubnetEvaluator(experiment, device=str(next(net.parameters()).device), net=net,
                                    max_images=experiment.trainer.eval.max_images)

        def score(arch: Any) -> dict[str, float]:
            metrics = evaluator.evaluate(arch)["metrics"]
            return {f"{part}_AP": float(values["AP"]) for part, values in metrics.items()}

        return score

    # --- search and export ------------------------------------------------------------------
    def objective_factory(self, experiment: Experiment, name: str, device: str) -> Callable[[], Any]:
        if name == "analytic":  # a smooth stand-in for a trained supernet (tests, benchmarks)
            return AnalyticFactory(str(experiment.space_path), space=experiment.space)
        return WholeBodyFactory(experiment, device)

    def export(self, experiment: Experiment, arch: Any, out: Path, **options: Any) -> dict[str, Any]:
        return export_subnet(experiment, arch, out, **options)

    def load_exported(self, directory: Path) -> nn.Module:
        return load_exported(directory)
