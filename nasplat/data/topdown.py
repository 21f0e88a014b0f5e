"""Top-down person crops as a torch Dataset, and the DataLoader helpers.

Items (docs/DESIGN.md): `image` [3, H, W] float normalised with ImageNet mean/std, `target`
[38, H/4, W/4], `target_weight` [38], `keypoints` [133, 3] (x, y crop-input pixels, v 1 labeled /
0 not), `part_boxes` [3, 4] xyxy crop-input pixels (face, left hand, right hand), `part_valid`
[3], and meta `center` [2], `scale` [2], `rotation` [], `image_id` [], `ann_id` [], `area` [],
`score` []. With a flip, `center` is in the flipped image's frame.

Augmentation is a pure function of (seed, epoch, index): the same item is the same crop in any
worker; call `set_epoch` before each epoch to draw new ones.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from nasplat.data.coco import Instance, WholeBodyAnnotations
from nasplat.data.keypoints import FLIP_INDEX, IMAGENET_MEAN, IMAGENET_STD
from nasplat.data.targets import body_targets
from nasplat.data.transforms import AugmentParams, CropParams, apply_affine, full_crop_matrix, sample_crop
from nasplat.errors import DataError

_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def _part_boxes_in_crop(boxes: np.ndarray, matrix: np.ndarray, flip: bool) -> np.ndarray:
    """Boxes [3, 4] xyxy image -> crop: the axis-aligned hull of the 4 transformed corners."""
    x1, y1, x2, y2 = boxes.T  # each [3]
    corners = np.stack(
        [np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1), np.stack([x1, y2], -1)], 1
    )  # [3, 4, 2]
    t = apply_affine(corners, matrix)  # [3, 4, 2]
    out = np.concatenate([t.min(axis=1), t.max(axis=1)], axis=1)  # [3, 4]
    if flip:
        out = out[[0, 2, 1]]  # the left hand is now the right hand
    return out


class TopDownDataset(Dataset):
    """Person crops for BodyNet training or evaluation.

    instances: from `train_instances` / `val_instances`; images: their annotation file (for the
    image paths); input_size (H, W) of the body input; sigma of the body targets in heatmap
    pixels (`box_sigma` that of the box keypoints, default `sigma`); augment None for plain validation crops (box padded 1.25x, no flip).
    """

    def __init__(
        self,
        instances: Sequence[Instance],
        images: WholeBodyAnnotations,
        input_size: tuple[int, int],
        *,
        sigma: float = 3.0,
        box_sigma: float | None = None,
        augment: AugmentParams | None = None,
        seed: int = 0,
    ) -> None:
        if input_size[0] % 4 or input_size[1] % 4:
            raise DataError(f"input size {input_size} must be a multiple of 4", key="input_size")
        self.instances = tuple(instances)
        # only what items need, so the dataset pickles cheaply into worker processes
        self._paths = {i: str(info.path) for i, info in images.images.items()}
        self._widths = {i: info.width for i, info in images.images.items()}
        self._source = str(images.ann_file)
        missing = {inst.image_id for inst in self.instances} - set(self._paths)
        if missing:
            raise DataError(f"instances name image ids not in the annotation file: {sorted(missing)[:5]}",
                            source=self._source)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.sigma = float(sigma)
        self.box_sigma = None if box_sigma is None else float(box_sigma)
        self.augment = augment if augment is not None else AugmentParams.none()
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of augmentations (deterministic for (seed, epoch))."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.instances)

    def _read_image(self, image_id: int) -> np.ndarray:
        path = self._paths[image_id]
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"cannot read image {path} (image id {image_id})", source=self._source)
        return image

    def crop_params(self, index: int) -> CropParams:
        """The crop item `index` uses in the current epoch."""
        inst = self.instances[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        width = self._widths[inst.image_id]
        return sample_crop(inst.bbox, self.input_size, self.augment, rng, width)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        inst = self.instances[index]
        image = self._read_image(inst.image_id)  # [h, w, 3] BGR uint8
        crop = self.crop_params(index)
        in_h, in_w = self.input_size
        matrix = full_crop_matrix(crop, self.input_size, image.shape[1])
        patch = cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)  # [H, W, 3]
        rgb = (patch[..., ::-1].astype(np.float32) - _MEAN) / _STD
        kpts = np.array(inst.keypoints, dtype=np.float32)  # [133, 3]
        kpts[:, :2] = apply_affine(kpts[:, :2].astype(np.float64), matrix)
        boxes = _part_boxes_in_crop(inst.part_boxes.astype(np.float64), matrix, crop.flip).astype(np.float32)
        valid = np.array(inst.part_valid, dtype=np.float32)
        if crop.flip:
            kpts = kpts[FLIP_INDEX]
            valid = valid[[0, 2, 1]]
        kpts[kpts[:, 2] <= 0, :2] = 0.0
        centers = (boxes[:, :2] + boxes[:, 2:]) * 0.5
        in_crop = (centers[:, 0] >= 0) & (centers[:, 0] < in_w) & (centers[:, 1] >= 0) & (centers[:, 1] < in_h)
        valid = valid * in_crop
        boxes[valid == 0] = 0.0
        kp_t = torch.from_numpy(kpts)
        box_t = torch.from_numpy(boxes)
        valid_t = torch.from_numpy(valid)
        target, weight = body_targets(kp_t[None], box_t[None], valid_t[None], self.input_size, self.sigma, self.box_sigma)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
            "target": target[0],
            "target_weight": weight[0],
            "keypoints": kp_t,
            "part_boxes": box_t,
            "part_valid": valid_t,
            "center": torch.tensor(crop.center, dtype=torch.float32),
            "scale": torch.tensor(crop.scale, dtype=torch.float32),
            "rotation": torch.tensor(crop.rotation, dtype=torch.float32),
            "image_id": torch.tensor(inst.image_id, dtype=torch.int64),
            "ann_id": torch.tensor(inst.ann_id, dtype=torch.int64),
            "area": torch.tensor(inst.area, dtype=torch.float32),
            "score": torch.tensor(inst.score, dtype=torch.float32),
        }


def collate(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of items into a batch (every field gains a leading batch dimension).

    Raises DataError: the items do not share the same fields.
    """
    if not items:
        raise DataError("cannot collate an empty batch")
    keys = items[0].keys()
    for item in items[1:]:
        if item.keys() != keys:
            raise DataError(f"items have different fields: {sorted(keys)} vs {sorted(item.keys())}")
    return {k: torch.stack([item[k] for item in items]) for k in keys}


def worker_init_fn(seed: int) -> Callable[[int], None]:
    """A DataLoader `worker_init_fn` that seeds torch (and cv2's thread count) per worker from
    `seed`. Augmentation itself is seeded per item and does not depend on it."""
    return _WorkerInit(int(seed))


class _WorkerInit:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, worker_id: int) -> None:
        torch.manual_seed(self.seed * 1000 + worker_id)
        cv2.setNumThreads(1)  # workers are processes; cv2's own threads would oversubscribe the CPUs


def make_loader(
    dataset: TopDownDataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 2,
    seed: int = 0,
    drop_last: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` with `collate`, seeded shuffling and seeded workers."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    # Workers start from a clean forkserver process: forking a parent whose OpenCV/OpenMP thread
    # pools are already running can deadlock the child on its first cv2/torch call.
    context = multiprocessing.get_context("forkserver") if num_workers > 0 else None
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=collate,
        worker_init_fn=worker_init_fn(seed) if num_workers > 0 else None,
        generator=generator,
        drop_last=drop_last,
        persistent_workers=False,
        multiprocessing_context=context,
    )
