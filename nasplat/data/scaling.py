"""Crop geometry between resolutions: a batch cut at the space's largest body resolution, seen by a
subnet at its own (smaller) input size.

Training resizes the max-resolution crops to each sandwich member's size, and inference maps the
points a subnet predicted back to the max crop. Both use F.interpolate with
`align_corners=False`, whose pixel-centre convention is: pixel x of the source lands at
`(x + 0.5) * s - 0.5` of a copy resized by s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def to_scaled(points: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Max-crop pixels [..., 2] -> pixels of the crop resized by (sx, sy) with align_corners=False."""
    s = points.new_tensor([sx, sy])
    return (points + 0.5) * s - 0.5


def from_scaled(points: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Inverse of `to_scaled`."""
    s = points.new_tensor([sx, sy])
    return (points + 0.5) / s - 0.5


def scale_boxes(boxes: torch.Tensor, sx: float, sy: float, inverse: bool = False) -> torch.Tensor:
    """xyxy boxes [..., 4] mapped corner by corner with `to_scaled` (or `from_scaled`)."""
    f = from_scaled if inverse else to_scaled
    return torch.cat((f(boxes[..., :2], sx, sy), f(boxes[..., 2:], sx, sy)), dim=-1)


def resize_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """images [B, 3, H, W] -> [B, 3, *size] (identity when already that size)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


__all__ = ["from_scaled", "resize_batch", "scale_boxes", "to_scaled"]
