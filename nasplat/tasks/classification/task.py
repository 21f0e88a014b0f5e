"""Image classification as a `Task`: an Once-for-All MobileNetV3 space, ImageFolder data (or a
synthetic set, or scikit-learn's handwritten digits), the sandwich step with in-place
distillation, and top-1 / top-5 accuracy.

An experiment of this task names `task: classification`, a space file of this task and a `data:`
section like

    data:
      root: ../outputs/classify/data     # <root>/train/<class>/*.png, <root>/val/<class>/*.png
      synthetic: {classes: 10, train_per_class: 100, val_per_class: 20, size: 32, seed: 0}
      augment: {scale: [0.35, 1.0], flip: true, crop_fraction: 0.875}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as pdataclass
from torch import nn

from nasplat.config import Experiment, TrainerRecipe
from nasplat.errors import ConfigError, DataError
from nasplat.files import STRICT, resolve_path
from nasplat.models import create_model
from nasplat.tasks.base import Metric, Task
from nasplat.tasks.classification import model as _model  # registers the `mobilenetv3` builder
from nasplat.tasks.classification.data import (
    SPLITS,
    AugmentConfig,
    ClassificationDataset,
    collate,
    scan_image_folder,
    synthesize_image_folder,
    write_digits_image_folder,
)
from nasplat.tasks.classification.evaluate import ClassificationEvaluator
from nasplat.tasks.classification.objective import OBJECTIVE, ClassificationFactory
from nasplat.tasks.classification.flops import analytic_gflops, analytic_params
from nasplat.tasks.classification.space import ClassificationSpace, MobileNetArch, load_classification_space
from nasplat.tasks.classification.step import sandwich_step
from nasplat.train.precision import Precision
from nasplat.train.sandwich import SandwichMember

DIGITS_CLASSES = 10  # scikit-learn's digits: 0 to 9

__all__ = ["ClassificationData", "ClassificationDataFile", "ClassificationTask", "DigitsFile", "SyntheticImagesFile"]


@pdataclass(config=STRICT, frozen=True)
class SyntheticImagesFile:
    """`data.synthetic`: generate an ImageFolder set of drawn shapes into `data.root`."""

    classes: int = Field(10, ge=2, le=40)
    train_per_class: int = Field(100, ge=1)
    val_per_class: int = Field(20, ge=1)
    size: int = Field(32, ge=8, le=512)  # pixels, square
    seed: int = Field(0, ge=0)


@pdataclass(config=STRICT, frozen=True)
class DigitsFile:
    """`data.digits`: write scikit-learn's 1,797 handwritten digits into `data.root` (a stratified,
    seeded train / val split)."""

    val_fraction: float = Field(0.25, gt=0, lt=1)
    size: int = Field(32, ge=8, le=256)  # the 8x8 digits upscaled to this many pixels
    seed: int = Field(0, ge=0)


@pdataclass(config=STRICT, frozen=True)
class AugmentFile:
    """`data.augment`: the training crops and the evaluation crop."""

    scale: tuple[float, float] = (0.35, 1.0)  # area fraction of the random resized crop
    flip: bool = True  # random horizontal flip (off where a mirror image is another class)
    crop_fraction: float = Field(0.875, gt=0, le=1)  # evaluation: centre crop of the resized image


@pdataclass(config=STRICT, frozen=True)
class ClassificationDataFile:
    """The `data:` section of a classification experiment as written."""

    root: str  # an ImageFolder folder (relative to the experiment file): train/<class>/..., val/<class>/...
    synthetic: SyntheticImagesFile | None = None  # generated into root when root has no data
    digits: DigitsFile | None = None  # written into root when root has no data
    augment: AugmentFile = AugmentFile()

    @model_validator(mode="after")
    def _one_generator(self) -> ClassificationDataFile:
        if self.synthetic is not None and self.digits is not None:
            raise ValueError("give data.synthetic or data.digits, not both")
        return self


@dataclass(frozen=True)
class ClassificationData:
    """The `data:` section loaded: `root` absolute."""

    root: Path
    synthetic: SyntheticImagesFile | None
    digits: DigitsFile | None
    augment: AugmentConfig


def _has_data(root: Path) -> bool:
    return all((root / split).is_dir() for split in SPLITS)


class ClassificationTask(Task):
    """Image classification on an Once-for-All-style MobileNetV3 space."""

    name = "classification"
    model = "mobilenetv3"
    metrics = (
        Metric("top1", "maximize", "fraction of validation images whose top-scored class is right"),
        Metric("top5", "maximize", "fraction of validation images whose class is among the 5 top-scored"),
    )
    objective = "top1"
    cost_parts = ("total",)
    data_file = ClassificationDataFile
    phases = frozenset({"search"})
    search_objectives = (OBJECTIVE,)

    # --- space ------------------------------------------------------------------------------
    def load_space(self, path: Path) -> ClassificationSpace:
        return load_classification_space(path)

    def num_classes(self, experiment: Experiment) -> int:
        """The classes of the data set: those the experiment generates, else those of the training
        split on disk. Raises DataError when it cannot be read."""
        data: ClassificationData = experiment.data
        if data.synthetic is not None:
            return data.synthetic.classes
        if data.digits is not None:
            return DIGITS_CLASSES
        return len(scan_image_folder(data.root, "train").classes)

    def gflops(self, experiment: Experiment) -> Callable[[Any], Mapping[str, float]]:
        space, classes = experiment.space, self.num_classes(experiment)
        return lambda arch: {"total": analytic_gflops(arch, space, classes)}

    def params(self, experiment: Experiment) -> Callable[[Any], int]:
        space, classes = experiment.space, self.num_classes(experiment)
        return lambda arch: analytic_params(arch, space, classes)

    # --- data -------------------------------------------------------------------------------
    def data_config(self, raw: ClassificationDataFile, base: Path, file: Path) -> ClassificationData:
        if "://" in raw.root:
            raise ConfigError(f"{raw.root!r}: the classification task reads a folder; copy the data set to each "
                              "node (or to a shared folder) and give its path", source=str(file), key="data.root")
        root = Path(raw.root).expanduser()
        root = root if root.is_absolute() else resolve_path(base / root, source=str(file), key="data.root")
        a = raw.augment
        try:
            augment = AugmentConfig(scale=a.scale, flip=a.flip, crop_fraction=a.crop_fraction)
        except DataError as e:
            raise ConfigError(e.detail, source=str(file), key=f"data.{e.key}") from e
        return ClassificationData(root=root, synthetic=raw.synthetic, digits=raw.digits, augment=augment)

    def ensure_data(self, experiment: Experiment) -> None:
        data: ClassificationData = experiment.data
        if data.synthetic is not None:
            s = data.synthetic
            synthesize_image_folder(data.root, classes=s.classes, train_per_class=s.train_per_class,
                                    val_per_class=s.val_per_class, size=s.size, seed=s.seed)
        elif data.digits is not None:
            d = data.digits
            write_digits_image_folder(data.root, val_fraction=d.val_fraction, seed=d.seed, size=d.size)
        elif not _has_data(data.root):
            raise DataError(f"no ImageFolder data under {data.root} (train/<class>/..., val/<class>/...) and no "
                            "data.synthetic or data.digits section to write it", source=str(experiment.path),
                            key="data.root")
        for split in SPLITS:  # the class folders, their images, train and val naming the same classes
            scan_image_folder(data.root, split)

    def train_dataset(self, experiment: Experiment, *, augment: bool = True) -> ClassificationDataset:
        data: ClassificationData = experiment.data
        return ClassificationDataset(data.root, "train", train=augment, resolution=experiment.space.max_arch().resolution,
                                     seed=experiment.seed, augment=data.augment)

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(items)

    # --- supernet ---------------------------------------------------------------------------
    def build_supernet(self, experiment: Experiment) -> nn.Module:
        return create_model(self.model, experiment.space, seed=experiment.seed, num_classes=self.num_classes(experiment))

    def supernet_from_config(self, config: Mapping[str, Any]) -> nn.Module:
        return _model.MobileNetV3Supernet(_model.MobileNetV3Config.from_dict(config))

    # --- training ---------------------------------------------------------------------------
    def sandwich_step(self, net: nn.Module, batch: dict[str, torch.Tensor], members: list[SandwichMember],
                      recipe: TrainerRecipe, *, epoch: int, student_weight: float, precision: Precision,
                      scaler: torch.amp.GradScaler | None) -> dict[str, float]:
        return sandwich_step(net, batch, members, recipe, epoch=epoch, student_weight=student_weight,
                             precision=precision, scaler=scaler)

    # --- evaluation -------------------------------------------------------------------------
    def epoch_metrics(self, experiment: Experiment, net: nn.Module) -> Callable[[MobileNetArch], dict[str, float]]:
        return ClassificationEvaluator(experiment, net, max_images=experiment.trainer.eval.max_images).evaluate

    # --- search and export ------------------------------------------------------------------
    def objective_factory(self, experiment: Experiment, name: str, device: str) -> Callable[[], Any]:
        return ClassificationFactory(experiment, device)

    def export(self, experiment: Experiment, arch: Any, out: Path, **options: Any) -> dict[str, Any]:
        from nasplat.tasks.classification.export import export_classifier

        return export_classifier(experiment, arch, out, **options)

    def load_exported(self, directory: Path) -> nn.Module:
        from nasplat.tasks.classification.export import load_exported_classifier

        return load_exported_classifier(directory)
