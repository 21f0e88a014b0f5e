"""Evaluate subnets of a trained supernet on the validation set (what the search calls).

`SubnetEvaluator(experiment, device)` loads the supernet once, decodes and crops the BN
calibration images (training persons, no augmentation) and the validation persons (GT boxes or
the experiment's detections) once, at the space's largest body resolution. `evaluate(arch)` then
sets the arch, recalibrates BN (the crops resized to the arch's resolution), predicts with a static
BN-folded copy of the subnet (`subnet.inference`), decodes body/foot from BodyNet and face/hands
from the heads inside the boxes they cropped, maps the points back to image pixels, and scores
them with the official whole-body protocol.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasplat.config import Experiment
from nasplat.data.coco import load_split, val_instances
from nasplat.data.decode import decode_wholebody, flip_back, instance_scores
from nasplat.data.keypoints import BODY_CHANNEL_FLIP_INDEX
from nasplat.data.scaling import from_scaled, resize_batch
from nasplat.data.topdown import TopDownDataset, collate
from nasplat.data.transforms import crop_to_image
from nasplat.errors import TrainingError
from nasplat.files import shell_command
from nasplat.flops import analytic_gflops, analytic_params
from nasplat.metrics.wholebody import WholeBodyEvaluator, make_results
from nasplat.models import decode_part_boxes
from nasplat.space.arch import Arch
from nasplat.subnet.bn import kept_bn_statistics, recalibrate_bn
from nasplat.subnet.inference import inference_copy
from nasplat.train.checkpoint import SUPERNET_KEY, load_checkpoint, supernet_checkpoint, supernet_from_payload
from nasplat.train.data import ensure_data, train_dataset
from nasplat.train.precision import recipe_precision

log = logging.getLogger(__name__)

_META = ("center", "scale", "rotation", "image_id", "score")
COPY_RANGE = "nasplat.inference_copy"  # the per-arch copy, as torch.profiler names it


@dataclass(frozen=True)
class CropCache:
    """Person crops at the max body resolution and what maps them back to the image."""

    images: torch.Tensor  # [N, 3, H, W]
    center: torch.Tensor  # [N, 2]
    scale: torch.Tensor  # [N, 2]
    rotation: torch.Tensor  # [N]
    image_id: torch.Tensor  # [N]
    score: torch.Tensor  # [N] person box score (1 for GT boxes)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _cache(dataset: Any, indices: list[int]) -> CropCache:
    items = [dataset[i] for i in indices]
    batch = collate(items)
    return CropCache(batch["image"], *(batch[k] for k in _META))


def _whole_images(instances: list[Any], max_persons: int) -> list[Any]:
    """The instances of the first images (in order of first appearance) whose persons add up to
    at most `max_persons` (at least the first image's)."""
    per_image = Counter(int(i.image_id) for i in instances)
    images: set[int] = set()
    total = 0
    for image_id, count in per_image.items():  # insertion order: first appearance
        if images and total + count > max_persons:
            break
        images.add(image_id)
        total += count
    return [i for i in instances if int(i.image_id) in images]


def load_supernet(checkpoint: Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the supernet stored in a training checkpoint. Raises TrainingError."""
    payload = load_checkpoint(checkpoint, map_location=device)
    try:
        net = supernet_from_payload(payload)
    except TrainingError as e:
        raise TrainingError(e.detail, source=str(checkpoint)) from e
    return net.to(device), payload


def latest_checkpoint(experiment: Experiment) -> Path:
    """This node's path of the experiment's trained supernet (`train.checkpoint.supernet_checkpoint`:
    the checkpoint folder, or a cached copy from the object store of `storage_path`). Raises
    TrainingError when there is none, StorageError when the storage root cannot be read."""
    path = supernet_checkpoint(experiment)
    if path is None:
        where = experiment.checkpoint_dir if experiment.storage.local else experiment.storage.join(SUPERNET_KEY)
        raise TrainingError(
            f"no supernet checkpoint in {where}; run `{shell_command('nasplat', 'train', experiment.path)}` first",
            source=str(experiment.path), key="storage_path" if experiment.storage.is_remote else "output_dir",
        )
    return path


class SubnetEvaluator:
    """Evaluates subnets of one trained supernet; crops are decoded once and reused.

    experiment: the loaded experiment; device: torch device string; checkpoint: a specific
    supernet checkpoint (default: the experiment's latest); net: an in-memory supernet instead
    (training uses this; its BN statistics are restored after every evaluation);
    max_images: cap on validation persons, kept and scored as whole images (default: all;
    training passes `eval.max_images`);
    load_val: False to prepare BN calibration only (export), `evaluate` then raises;
    static_predict: predict with a static BN-folded copy of the subnet (`inference_copy`, made
    per call) rather than the elastic supernet: the same heatmaps up to float rounding, faster.

    Raises TrainingError (no checkpoint) and DataError (no data).
    """

    def __init__(
        self,
        experiment: Experiment,
        device: str = "cpu",
        *,
        checkpoint: Path | None = None,
        net: Any | None = None,
        max_images: int | None = None,
        load_val: bool = True,
        static_predict: bool = True,
    ) -> None:
        self.experiment = experiment
        self.static_predict = static_predict
        self.device = torch.device(device)
        self.recipe = experiment.trainer
        # BN recalibration and prediction run at the recipe's precision and memory layout
        self.precision = recipe_precision(self.recipe, self.device)
        if net is None:
            self.checkpoint = checkpoint or latest_checkpoint(experiment)
            net, _ = load_supernet(self.checkpoint, self.device)
            self.net = self.precision.module(net)
        else:
            self.checkpoint = checkpoint
            self.net = net
        space = experiment.space
        self.blocks_per_module = space.all_blocks_per_module()
        self.input_size = space.max_arch().body.input_size

        ensure_data(experiment)  # this node's copy of a synthetic set (nodes may share no disk)
        train = train_dataset(experiment, augment=False)
        k = min(self.recipe.bn_recalibration.images, len(train))
        order = np.random.default_rng([experiment.seed, 0xCA1]).permutation(len(train))[:k]
        self.calibration = _cache(train, sorted(order.tolist()))

        self.val: CropCache | None = None
        self.evaluator: Any = None
        if not load_val:
            return
        val_ann = load_split(experiment.data.root, "val")
        instances = val_instances(val_ann, experiment.data.detections)
        # A cap keeps whole images, and the evaluation then covers only those images: a GT person
        # of an image we never predicted on would count as a miss and deflate AP and AR.
        self.val_image_ids: list[int] | None = None
        if max_images is not None:
            instances = _whole_images(instances, max_images)
            self.val_image_ids = sorted({int(i.image_id) for i in instances})
        val = TopDownDataset(instances, val_ann, self.input_size, sigma=self.recipe.heatmap_sigma,
                             box_sigma=self.recipe.box_sigma, augment=None)
        self.val = _cache(val, list(range(len(val))))
        self.evaluator = WholeBodyEvaluator(val_ann)

    # --------------------------------------------------------------------------------------------

    def _batches(self, images: torch.Tensor, size: tuple[int, int], batch_size: int):  # noqa: ANN202
        for start in range(0, images.shape[0], batch_size):
            yield self.precision.input(resize_batch(images[start : start + batch_size].to(self.device), size))

    def recalibrate(self, arch: Arch) -> int:
        """Set `arch` and recompute BN statistics over the calibration crops. Returns batches used."""
        self.net.set_arch(arch)
        batches = self._batches(self.calibration.images, arch.body.input_size, self.recipe.bn_recalibration.batch_size)
        with self.precision.autocast():
            return recalibrate_bn(self.net, batches, lambda m, x: m(x))

    @torch.no_grad()
    def predict(self, arch: Arch, *, flip_test: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints [N, 133, 3] (x, y image pixels, score) and instance scores [N] of the val
        persons for the active BN statistics (call `recalibrate` first)."""
        if self.val is None:
            raise TrainingError("this evaluator was built without the validation set (load_val=False)")
        flip = self.recipe.eval.flip_test if flip_test is None else flip_test
        supernet = self.net
        supernet.set_arch(arch)
        was_training = supernet.training
        supernet.eval()
        # the copy's folded BN holds the statistics just recalibrated: made per call, never kept
        net = supernet
        if self.static_predict and hasattr(supernet, "extract"):  # a static net (no `extract`) is used as it is
            with torch.profiler.record_function(COPY_RANGE):
                net = self.precision.module(inference_copy(supernet, arch))
        size = arch.body.input_size
        sx, sy = size[1] / self.input_size[1], size[0] / self.input_size[0]
        out_kp, out_sc = [], []
        bs = self.recipe.eval.batch_size
        try:
            for start, x in zip(range(0, len(self.val), bs), self._batches(self.val.images, size, bs)):
                sl = slice(start, start + x.shape[0])
                with self.precision.autocast():
                    body, features = net.forward_body(x)  # [B, 38, h, w]
                    body = body.float()
                    if flip:
                        body_f, _ = net.forward_body(x.flip(-1))
                        body = (body + flip_back(body_f.float(), BODY_CHANNEL_FLIP_INDEX, shift=True)) / 2
                    heads = net.forward_heads(features, decode_part_boxes(body), size)
                heads = heads._replace(face_heatmaps=heads.face_heatmaps.float(), hand_heatmaps=heads.hand_heatmaps.float())
                xy, s = decode_wholebody(body, heads.boxes, heads.face_heatmaps, heads.hand_heatmaps)  # arch-input px
                xy = from_scaled(xy, sx, sy)  # max-crop px
                xy = crop_to_image(
                    xy.float().cpu(), self.val.center[sl], self.val.scale[sl], self.val.rotation[sl], self.input_size
                )
                s = s.float().cpu()  # [B, 133]
                out_kp.append(torch.cat((xy, s[..., None]), dim=-1))
                out_sc.append(instance_scores(self.val.score[sl], s))
        finally:
            supernet.train(was_training)
        return torch.cat(out_kp).numpy(), torch.cat(out_sc).numpy()

    def evaluate(self, arch: Arch, *, recalibrate: bool = True, flip_test: bool | None = None) -> dict[str, Any]:
        """Recalibrate BN for `arch` (unless told not to), evaluate it on the val set.

        Returns {"metrics": {part: {"AP", "AR"}}, "gflops": {"body", "face", "hand", "total"},
        "params": int}. The supernet's own BN statistics are restored afterwards.
        Raises ArchError when `arch` is not in the space.
        """
        self.experiment.space.validate(arch)
        with kept_bn_statistics(self.net):
            if recalibrate:
                self.recalibrate(arch)
            keypoints, scores = self.predict(arch, flip_test=flip_test)
        assert self.val is not None  # predict raised otherwise
        results = make_results(self.val.image_id.numpy(), keypoints, scores)
        metrics = self.evaluator.evaluate(results, image_ids=self.val_image_ids)
        return {
            "metrics": metrics,
            "gflops": analytic_gflops(arch, self.blocks_per_module).as_dict(),
            "params": int(analytic_params(arch, self.blocks_per_module)),
        }


__all__ = ["COPY_RANGE", "CropCache", "SubnetEvaluator", "latest_checkpoint", "load_supernet"]
