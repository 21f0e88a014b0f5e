"""Top-1 / top-5 accuracy of subnets of a classification supernet on the validation split.

As the pose task's evaluator does: training images (evaluation transform) and validation images
are decoded once at the space's largest resolution and kept as tensors; a subnet sees them resized
to its own resolution, as it saw its training batches. Before a subnet is scored, its BN
statistics are recomputed on the calibration images (`recipe.bn_recalibration`), and the
supernet's own statistics are restored afterwards.

The calibration itself (`calibration_images`, `recalibrate_subnet`, and `kept_bn_statistics` of
`nasplat.subnet.bn`, which ZoomNAS's evaluator uses too) is shared with the export (`nasplat.tasks.classification.export`), so an exported subnet has the
statistics the search scored it with.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from nasplat.config import Experiment
from nasplat.subnet.bn import kept_bn_statistics, recalibrate_bn
from nasplat.tasks.classification.data import ClassificationDataset
from nasplat.tasks.classification.metrics import AccuracyMeter
from nasplat.tasks.classification.space import MobileNetArch
from nasplat.tasks.classification.step import resize_images
from nasplat.train.precision import Precision, recipe_precision

__all__ = ["ClassificationEvaluator", "calibration_images", "load_images", "recalibrate_subnet"]


def load_images(dataset: ClassificationDataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """The items `indices` of `dataset` stacked: images [N, 3, R, R], labels [N]."""
    items = [dataset[i] for i in indices]
    if not items:
        r = dataset.resolution
        return torch.zeros(0, 3, r, r), torch.zeros(0, dtype=torch.int64)
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


def calibration_images(experiment: Experiment) -> Tensor:
    """The BN calibration images of `experiment`: `recipe.bn_recalibration.images` training images
    (at most all of them; a choice seeded by the experiment's seed), with the evaluation transform
    at the space's largest resolution, [K, 3, R, R] on the CPU. Raises DataError when the data
    cannot be read."""
    data, resolution = experiment.data, experiment.space.max_arch().resolution
    train = ClassificationDataset(data.root, "train", train=False, resolution=resolution, seed=experiment.seed,
                                  augment=data.augment)
    k = min(experiment.trainer.bn_recalibration.images, len(train))
    order = np.random.default_rng([experiment.seed, 0xCA1]).permutation(len(train))[:k]
    images, _ = load_images(train, sorted(order.tolist()))
    return images


def _batches(images: Tensor, resolution: int, batch_size: int, device: torch.device,
             precision: Precision) -> Iterator[Tensor]:
    """`images` [N, 3, R, R] in batches of `batch_size` on `device`, resized to `resolution`."""
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size].to(device)
        yield precision.input(resize_images(chunk, resolution))  # [b, 3, resolution, resolution]


@torch.no_grad()
def recalibrate_subnet(net: nn.Module, arch: MobileNetArch, images: Tensor, *, batch_size: int,
                       precision: Precision) -> None:
    """Set `arch` on the supernet `net` and recompute its BN statistics on `images` [N, 3, R, R]
    (resized to the arch's resolution, in batches of `batch_size`, at `precision`). The statistics
    the supernet had are overwritten: wrap the call in `kept_bn_statistics(net)` to get them
    back. Raises ArchError when `arch` is not a subnet of `net`."""
    net.set_arch(arch)
    device = next(net.parameters()).device
    with precision.autocast():
        recalibrate_bn(net, _batches(images, arch.resolution, batch_size, device, precision), lambda m, x: m(x))


class ClassificationEvaluator:
    """Scores subnets of `net` (a `MobileNetV3Supernet`) on the experiment's validation split.

    max_images: cap on validation images (the first ones of a seeded permutation; None: all).
    Raises DataError when the data cannot be read.
    """

    def __init__(self, experiment: Experiment, net: nn.Module, *, max_images: int | None = None) -> None:
        self.net = net
        self.recipe = recipe = experiment.trainer
        self.device = next(net.parameters()).device
        self.precision = recipe_precision(recipe, self.device)
        data, resolution = experiment.data, experiment.space.max_arch().resolution
        self.calibration = calibration_images(experiment)
        val = ClassificationDataset(data.root, "val", train=False, resolution=resolution, augment=data.augment)
        n = len(val) if max_images is None else min(max_images, len(val))
        order = np.random.default_rng([experiment.seed, 0x7A1]).permutation(len(val))[:n]
        self.images, self.labels = load_images(val, sorted(order.tolist()))

    @torch.no_grad()
    def evaluate(self, arch: MobileNetArch, *, recalibrate: bool = True) -> dict[str, float]:
        """{"top1", "top5"} (fractions) of `arch` on the validation images. Raises ArchError when
        `arch` is not a subnet of the supernet."""
        net = self.net
        with kept_bn_statistics(net):
            if recalibrate:
                recalibrate_subnet(net, arch, self.calibration, batch_size=self.recipe.bn_recalibration.batch_size,
                                   precision=self.precision)
            else:
                net.set_arch(arch)
            net.eval()
            meter = AccuracyMeter()
            batch = self.recipe.eval.batch_size
            batches = _batches(self.images, arch.resolution, batch, self.device, self.precision)
            for start, x in zip(range(0, self.images.shape[0], batch), batches):
                with self.precision.autocast():
                    logits = net(x).float()
                meter.update(logits.cpu(), self.labels[start : start + batch])
        result = meter.result()
        return {"top1": float(result["top1"]), "top5": float(result["top5"])}
