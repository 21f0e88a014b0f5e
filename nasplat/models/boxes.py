"""Part boxes from BodyNet's box-keypoint heatmaps, and RoI expansion.

BodyNet channels 23-37 hold 5 box keypoints (top-left, top-right, bottom-right, bottom-left,
centre) for the face, the left hand and the right hand. A part box is the minimum rectangle of
its 5 decoded points, in body-input pixels (heatmap pixel (i, j) sits at (4j, 4i)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nasplat.data.decode import decode_heatmaps

__all__ = ["BOX_CHANNELS", "MIN_BOX_SIZE", "NUM_PARTS", "decode_part_boxes", "expand_boxes"]

BOX_CHANNELS = slice(23, 38)
NUM_PARTS = 3  # face, left hand, right hand
MIN_BOX_SIZE = 4.0
"""Smallest box side in body-input pixels (one heatmap stride): degenerate boxes (all five points
on one pixel, or an invalid part) still crop a finite region, never NaN."""


def decode_part_boxes(heatmaps: Tensor, stride: float = 4.0) -> Tensor:
    """Boxes of the three parts from BodyNet heatmaps [B, 38, h, w] -> [B, 3, 4] xyxy input pixels.

    Each box keypoint is decoded like a body keypoint (argmax plus a quarter-pixel step toward the
    higher neighbour, `nasplat.data.decode.decode_heatmaps`), then each part's box is the minimum
    rectangle of its 5 points. The sub-pixel step matters for hands, whose boxes can be two or
    three heatmap pixels wide. The result carries no gradient. Raises ValueError when the heatmaps
    have fewer than 38 channels.
    """
    if heatmaps.dim() != 4 or heatmaps.shape[1] < BOX_CHANNELS.stop:
        raise ValueError(f"expected BodyNet heatmaps [B, 38, h, w], got {tuple(heatmaps.shape)}")
    b = heatmaps.shape[0]
    with torch.no_grad():
        coords, _ = decode_heatmaps(heatmaps[:, BOX_CHANNELS])  # [B, 15, 2] heatmap px
        pts = (coords * stride).view(b, NUM_PARTS, 5, 2)  # [B, 3, 5, (x, y)]
        return torch.cat((pts.amin(dim=2), pts.amax(dim=2)), dim=-1)  # [B, 3, 4]


def expand_boxes(boxes: Tensor, ratio: float, min_size: float = MIN_BOX_SIZE) -> Tensor:
    """Scale boxes [..., 4] (xyxy) by `ratio` about their centres; each side at least `min_size`.

    Inverted boxes (x2 < x1) are treated as empty, so the result is always a valid box.
    """
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2  # [..., 2]
    half = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0) * (ratio / 2)
    half = half.clamp(min=min_size / 2)
    return torch.cat((centre - half, centre + half), dim=-1)
