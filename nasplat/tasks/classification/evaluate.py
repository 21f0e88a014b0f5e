"""Top-1 / top-5 accuracy of subnets of a classification supernet on the validation split.

As the pose task's evaluator does: training images (evaluation transform) and validation images
are decoded once at the space's largest resolution and kept as tensors; a subnet sees them resized
to its own resolution, as it saw its training batches. Before a subnet is scored, its BN
statistics are recomputed on the calibration images (`recipe.bn_recalibration`), and the
supernet's own statistics are restored afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nasplat.config import Experiment
from nasplat.subnet.bn import batchnorm_modules, recalibrate_bn
from nasplat.tasks.classification.data import ClassificationDataset
from nasplat.tasks.classification.metrics import AccuracyMeter
from nasplat.tasks.classification.space import MobileNetArch
from nasplat.tasks.classification.step import resize_images
from nasplat.train.precision import recipe_precision

__all__ = ["ClassificationEvaluator", "load_images"]


def load_images(dataset: ClassificationDataset, indices: list[int]) -> tuple[Tensor, Tensor]:
    """The items `indices` of `dataset` stacked: images [N, 3, R, R], labels [N]."""
    items = [dataset[i] for i in indices]
    if not items:
        r = dataset.resolution
        return torch.zeros(0, 3, r, r), torch.zeros(0, dtype=torch.int64)
    return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])


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
        train = ClassificationDataset(data.root, "train", train=False, resolution=resolution, seed=experiment.seed,
                                      augment=data.augment)
        k = min(recipe.bn_recalibration.images, len(train))
        order = np.random.default_rng([experiment.seed, 0xCA1]).permutation(len(train))[:k]
        self.calibration, _ = load_images(train, sorted(order.tolist()))
        val = ClassificationDataset(data.root, "val", train=False, resolution=resolution, augment=data.augment)
        n = len(val) if max_images is None else min(max_images, len(val))
        order = np.random.default_rng([experiment.seed, 0x7A1]).permutation(len(val))[:n]
        self.images, self.labels = load_images(val, sorted(order.tolist()))

    def _batches(self, images: Tensor, resolution: int, batch_size: int) -> Any:
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(self.device)
            yield self.precision.input(resize_images(chunk, resolution))

    @torch.no_grad()
    def evaluate(self, arch: MobileNetArch, *, recalibrate: bool = True) -> dict[str, float]:
        """{"top1", "top5"} (fractions) of `arch` on the validation images. Raises ArchError when
        `arch` is not a subnet of the supernet."""
        net = self.net
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                 for m in batchnorm_modules(net)]
        was_training = net.training
        try:
            net.set_arch(arch)
            if recalibrate:
                with self.precision.autocast():
                    recalibrate_bn(net, self._batches(self.calibration, arch.resolution,
                                                      self.recipe.bn_recalibration.batch_size), lambda m, x: m(x))
            net.eval()
            meter = AccuracyMeter()
            batch = self.recipe.eval.batch_size
            for start, x in zip(range(0, self.images.shape[0], batch), self._batches(self.images, arch.resolution, batch)):
                with self.precision.autocast():
                    logits = net(x).float()
                meter.update(logits.cpu(), self.labels[start : start + batch])
        finally:
            net.train(was_training)
            for m, (mean, var, n) in zip(batchnorm_modules(net), saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(n)
        result = meter.result()
        return {"top1": float(result["top1"]), "top5": float(result["top5"])}
