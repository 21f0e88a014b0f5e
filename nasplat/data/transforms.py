"""The top-down affine crop, its augmentation, and its inverse.

Convention: pixel centres sit at integer coordinates (cv2's), in images and crops alike. A crop
is described by `center` (x, y) and `scale` (w, h) of the image region it shows, in image pixels,
and `rotation` in degrees. With c_in = (W/2, H/2) the centre of the crop input (H x W):

    image_point = center + R(rotation) @ ((crop_point - c_in) * (scale / (W, H)))

R(a) = [[cos a, -sin a], [sin a, cos a]] acting on (x, y) with y pointing down, so the sampled
region is turned clockwise on screen and the person appears turned counter-clockwise in the crop.
`crop_to_image` is this map;
`crop_matrix` is its inverse (image -> crop), the matrix handed to cv2.warpAffine.

A horizontal flip is applied to the image before the crop: x -> image_width - 1 - x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nasplat.errors import DataError


@dataclass(frozen=True)
class AugmentParams:
    """Training augmentation of the person crop (built by the trainer recipe).

    scale_factor: the crop size is multiplied by s in [1 - f, 1 + f] (clipped normal, std f).
    rotation_deg: the rotation is uniform in [-r, r] degrees, applied with `rotation_prob`.
    flip_prob: probability of a horizontal flip (keypoints follow the flip pairs, the left and
        right hand boxes swap).
    padding: the GT box is grown by this factor after fixing its aspect ratio.
    """

    scale_factor: float = 0.5
    rotation_deg: float = 40.0
    rotation_prob: float = 0.6
    flip_prob: float = 0.5
    padding: float = 1.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.scale_factor < 1.0:
            raise DataError(f"scale_factor {self.scale_factor} not in [0, 1)", key="augment.scale_factor")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise DataError(f"rotation_deg {self.rotation_deg} not in [0, 180]", key="augment.rotation_deg")
        for name in ("rotation_prob", "flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"{name} {value} not in [0, 1]", key=f"augment.{name}")
        if self.padding < 1.0:
            raise DataError(f"padding {self.padding} below 1", key="augment.padding")

    @classmethod
    def none(cls, padding: float = 1.25) -> AugmentParams:
        """No augmentation (validation crops)."""
        return cls(scale_factor=0.0, rotation_deg=0.0, rotation_prob=0.0, flip_prob=0.0, padding=padding)


@dataclass(frozen=True)
class CropParams:
    """One sampled crop: where, how big, how rotated, whether flipped first."""

    center: tuple[float, float]
    scale: tuple[float, float]
    rotation: float
    flip: bool


def box_to_center_scale(
    bbox_xywh: tuple[float, float, float, float], input_size: tuple[int, int], padding: float = 1.25
) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (w, h) of the crop region for a person box: the box is widened or heightened
    to the input's aspect (W/H), then grown by `padding`."""
    x, y, w, h = bbox_xywh
    in_h, in_w = input_size
    aspect = in_w / in_h
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return center, np.array([w * padding, h * padding], dtype=np.float64)


def sample_crop(
    bbox_xywh: tuple[float, float, float, float],
    input_size: tuple[int, int],
    augment: AugmentParams,
    rng: np.random.Generator,
    image_width: int,
) -> CropParams:
    """Draw one augmented crop for a person box (the box in the unflipped image)."""
    center, scale = box_to_center_scale(bbox_xywh, input_size, augment.padding)
    flip = bool(rng.random() < augment.flip_prob) if augment.flip_prob > 0 else False
    if flip:
        center[0] = image_width - 1 - center[0]
    if augment.scale_factor > 0:
        f = augment.scale_factor
        scale = scale * float(np.clip(rng.normal() * f + 1.0, 1.0 - f, 1.0 + f))
    rotation = 0.0
    if augment.rotation_prob > 0 and rng.random() < augment.rotation_prob:
        rotation = float(rng.uniform(-augment.rotation_deg, augment.rotation_deg))
    return CropParams((float(center[0]), float(center[1])), (float(scale[0]), float(scale[1])), rotation, flip)


def crop_matrix(
    center: tuple[float, float] | np.ndarray,
    scale: tuple[float, float] | np.ndarray,
    rotation: float,
    input_size: tuple[int, int],
) -> np.ndarray:
    """The 2x3 affine image -> crop input (the inverse of `crop_to_image`)."""
    in_h, in_w = input_size
    sx, sy = in_w / float(scale[0]), in_h / float(scale[1])
    a = math.radians(rotation)
    cos, sin = math.cos(a), math.sin(a)
    # crop = S^-1 R^T (image - center) + c_in
    rt = np.array([[cos, sin], [-sin, cos]])
    lin = np.diag([sx, sy]) @ rt
    offset = np.array([in_w * 0.5, in_h * 0.5]) - lin @ np.asarray(center, dtype=np.float64)
    return np.concatenate([lin, offset[:, None]], axis=1)


def flip_matrix(image_width: int) -> np.ndarray:
    """The 3x3 horizontal flip x -> W - 1 - x."""
    return np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def full_crop_matrix(crop: CropParams, input_size: tuple[int, int], image_width: int) -> np.ndarray:
    """2x3 affine from the original (unflipped) image to the crop input, flip included."""
    m = crop_matrix(crop.center, crop.scale, crop.rotation, input_size)
    if crop.flip:
        m = m @ flip_matrix(image_width)
    return m


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Points [..., 2] mapped by a 2x3 matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def crop_to_image(
    points: torch.Tensor,
    center: torch.Tensor,
    scale: torch.Tensor,
    rotation: torch.Tensor,
    input_size: tuple[int, int],
) -> torch.Tensor:
    """Map crop-input pixels back to image pixels (the inverse of the crop affine).

    points [B, K, 2] (x, y) in crop-input pixels; center [B, 2]; scale [B, 2] (w, h of the
    crop region in image pixels); rotation [B] degrees; input_size (H, W). Returns [B, K, 2].
    """
    in_h, in_w = input_size
    c_in = points.new_tensor([in_w * 0.5, in_h * 0.5])
    per_px = scale.to(points.dtype) / points.new_tensor([in_w, in_h])  # [B, 2]
    local = (points - c_in) * per_px[:, None, :]  # [B, K, 2]
    a = torch.deg2rad(rotation.to(points.dtype))
    cos, sin = torch.cos(a)[:, None], torch.sin(a)[:, None]  # [B, 1]
    x = cos * local[..., 0] - sin * local[..., 1]
    y = sin * local[..., 0] + cos * local[..., 1]
    return torch.stack([x, y], dim=-1) + center.to(points.dtype)[:, None, :]
