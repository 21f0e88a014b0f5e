"""Heatmap decoding, flip test, and coordinate maps between heatmaps and the body input.

Conventions as in `nasplat.data.targets` (docs/DESIGN.md).
"""

from __future__ import annotations

import numpy as np
import torch

from nasplat.data.targets import BODY_STRIDE


def decode_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of each heatmap plus a quarter-pixel step toward the higher neighbour.

    heatmaps [B, K, h, w] -> coords [B, K, 2] (x, y in heatmap pixels), scores [B, K] (the peak
    value). The step is taken per axis, only where both neighbours exist.
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)  # [B, K, h*w]
    scores, idx = flat.max(dim=-1)  # [B, K]
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx - ys * w

    def at(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        lin = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).unsqueeze(-1)  # [B, K, 1]
        return flat.gather(-1, lin).squeeze(-1)  # [B, K]

    dx = at(ys, xs + 1) - at(ys, xs - 1)
    dy = at(ys + 1, xs) - at(ys - 1, xs)
    has_x = (xs > 0) & (xs < w - 1)
    has_y = (ys > 0) & (ys < h - 1)
    x = xs.to(heatmaps.dtype) + 0.25 * torch.sign(dx) * has_x
    y = ys.to(heatmaps.dtype) + 0.25 * torch.sign(dy) * has_y
    return torch.stack([x, y], dim=-1), scores


def flip_back(heatmaps: torch.Tensor, flip_index: np.ndarray | torch.Tensor, shift: bool = True) -> torch.Tensor:
    """Heatmaps predicted on a horizontally flipped crop, brought back to the unflipped crop.

    heatmaps [B, K, h, w]; flip_index [K]: channel k of the result is channel flip_index[k] of
    the input (e.g. `BODY_CHANNEL_FLIP_INDEX`, `FACE_FLIP_INDEX`). With `shift` (for the body's
    stride-4 convention, where a flipped column j lands at j + 0.75), the result is moved one
    pixel right, as mmpose's `shift_heatmap`.
    """
    index = torch.tensor(np.asarray(flip_index), dtype=torch.long, device=heatmaps.device)  # a copy: the tables are read-only arrays
    out = heatmaps.index_select(1, index).flip(-1)  # [B, K, h, w]
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def body_heatmap_to_input(coords: torch.Tensor) -> torch.Tensor:
    """Body heatmap pixels [..., 2] -> body-input pixels (pixel (i, j) sits at (4j, 4i))."""
    return coords * BODY_STRIDE


def head_heatmap_to_input(coords: torch.Tensor, boxes: torch.Tensor, resolution: int) -> torch.Tensor:
    """Head heatmap pixels [B, K, 2] of boxes [B, 4] (xyxy body-input pixels) at R x R ->
    body-input pixels: x1 + (j + 0.5)(x2 - x1)/R, y1 + (i + 0.5)(y2 - y1)/R."""
    x1y1 = boxes[:, None, 0:2]  # [B, 1, 2]
    size = (boxes[:, None, 2:4] - x1y1) / resolution  # [B, 1, 2]
    return x1y1 + (coords + 0.5) * size


def decode_wholebody(
    body_heatmaps: torch.Tensor, boxes: torch.Tensor, face_heatmaps: torch.Tensor, hand_heatmaps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 133 whole-body keypoints of ZoomNet outputs, in body-input pixels.

    body_heatmaps [B, 38, h, w] (body and feet from channels 0-22), boxes [B, 3, 4] (the boxes the
    heads cropped: face, left hand, right hand), face_heatmaps [B, 68, Rf, Rf], hand_heatmaps
    [B, 2, 21, Rh, Rh] -> (xy [B, 133, 2] body-input pixels, scores [B, 133] heatmap peaks).
    """
    b = body_heatmaps.shape[0]
    body_xy, body_s = decode_heatmaps(body_heatmaps[:, :23])  # [B, 23, 2] heatmap px, [B, 23]
    body_xy = body_heatmap_to_input(body_xy)
    face_xy, face_s = decode_heatmaps(face_heatmaps)  # [B, 68, 2]
    face_xy = head_heatmap_to_input(face_xy, boxes[:, 0], face_heatmaps.shape[-1])
    hand_xy, hand_s = decode_heatmaps(hand_heatmaps.flatten(0, 1))  # [2B, 21, 2]
    hand_xy = head_heatmap_to_input(hand_xy, boxes[:, 1:3].flatten(0, 1), hand_heatmaps.shape[-1]).reshape(b, 42, 2)
    xy = torch.cat((body_xy, face_xy, hand_xy), dim=1)  # [B, 133, 2]
    scores = torch.cat((body_s, face_s, hand_s.reshape(b, 42)), dim=1)  # [B, 133]
    return xy, scores


def instance_scores(box_scores: torch.Tensor, keypoint_scores: torch.Tensor, threshold: float = 0.2) -> torch.Tensor:
    """mmpose's person score: the box score [B] times the mean of the keypoint scores [B, K] above
    `threshold` -> [B]."""
    confident = keypoint_scores > threshold
    mean = (keypoint_scores * confident).sum(1) / confident.sum(1).clamp_min(1)
    return box_scores * mean
