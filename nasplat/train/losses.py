"""Losses of a sandwich step: heatmap MSE against ground truth and against the max subnet.

The in-place distillation targets are the teacher's (max subnet's) detached heatmaps brought into
the student's frame: body heatmaps are resampled to the student's (smaller) heatmap grid, and
head heatmaps are warped from the teacher's box into the student's box, so a student pixel is
compared with the teacher's prediction at the same image point rather than at the same index of a
different region.

Coordinates follow DESIGN.md: body heatmap pixel (i, j) is body-input point (4j, 4i); head heatmap
pixel (i, j) of box (x1, y1, x2, y2) at resolution R is (x1 + (j + .5)(x2 - x1)/R, y1 + (i + .5)(y2 - y1)/R).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over every element of weight * (pred - target)^2, as in the paper's eq. (1).

    pred, target: [B, K, H, W]; weight broadcastable to [B, K, 1, 1] ([B, K] or [B, K, H, W]).
    """
    err = (pred - target) ** 2  # [B, K, H, W]
    if weight is not None:
        if weight.dim() == 2:
            weight = weight[:, :, None, None]  # [B, K, 1, 1]
        err = err * weight
    return err.mean()


def resample_body_heatmaps(teacher: torch.Tensor, scale: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """Teacher body heatmaps at the student's grid.

    teacher: [B, K, Ht, Wt] for a body input of the max resolution; the student's input is that
    crop resized by `scale` = (sx, sy) (student / teacher, align_corners=False). Student pixel
    (i, j) is student-input point (4j, 4i), i.e. max-input point ((4j + .5) / sx - .5, ...), i.e.
    teacher heatmap index a quarter of that. Returns [B, K, *size].
    """
    b, k, ht, wt = teacher.shape
    h, w = size
    sx, sy = scale
    stride = 4.0
    xs = ((torch.arange(w, dtype=teacher.dtype, device=teacher.device) * stride + 0.5) / sx - 0.5) / stride
    ys = ((torch.arange(h, dtype=teacher.dtype, device=teacher.device) * stride + 0.5) / sy - 0.5) / stride
    gx = 2 * xs / max(wt - 1, 1) - 1  # align_corners=True: index 0 -> -1, index Wt-1 -> +1
    gy = 2 * ys / max(ht - 1, 1) - 1
    grid = torch.stack((gx[None, :].expand(h, w), gy[:, None].expand(h, w)), dim=-1)  # [h, w, (x, y)]
    grid = grid.unsqueeze(0).expand(b, h, w, 2)
    return F.grid_sample(teacher, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def warp_head_heatmaps(
    teacher: torch.Tensor,
    teacher_boxes: torch.Tensor,
    student_boxes: torch.Tensor,
    resolution: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp head heatmaps from the teacher's boxes into the student's boxes.

    teacher: [N, K, Rt, Rt] predicted inside `teacher_boxes` [N, 4] (xyxy); `student_boxes` [N, 4]
    xyxy in the same pixel frame (convert the student's boxes to the teacher's input pixels first).
    Returns (heatmaps [N, K, R, R] at the student's pixels, mask [N, 1, R, R] = 1 where the
    student pixel lies inside the teacher's box, so outside pixels carry no distillation signal).
    """
    n = teacher.shape[0]
    r = resolution
    dev, dt = teacher.device, teacher.dtype
    centres = (torch.arange(r, dtype=dt, device=dev) + 0.5) / r  # [R] in (0, 1)
    sx1, sy1, sx2, sy2 = student_boxes.to(dt).unbind(-1)  # each [N]
    tx1, ty1, tx2, ty2 = teacher_boxes.to(dt).unbind(-1)
    px = sx1[:, None] + centres[None] * (sx2 - sx1)[:, None]  # [N, R] image x of student columns
    py = sy1[:, None] + centres[None] * (sy2 - sy1)[:, None]  # [N, R]
    gx = 2 * (px - tx1[:, None]) / (tx2 - tx1).clamp_min(1e-6)[:, None] - 1  # [N, R]
    gy = 2 * (py - ty1[:, None]) / (ty2 - ty1).clamp_min(1e-6)[:, None] - 1
    grid = torch.stack(
        (gx[:, None, :].expand(n, r, r), gy[:, :, None].expand(n, r, r)), dim=-1
    )  # [N, R, R, 2]
    warped = F.grid_sample(teacher, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = (grid.abs() <= 1).all(dim=-1, keepdim=True).permute(0, 3, 1, 2).to(dt)  # [N, 1, R, R]
    return warped, inside


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise IoU of xyxy boxes a, b: [..., 4] -> [...]."""
    ix = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp_min(0)
    iy = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp_min(0)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    return inter / (area_a + area_b - inter).clamp_min(1e-6)


def choose_head_boxes(
    predicted: torch.Tensor, gt: torch.Tensor, gt_valid: torch.Tensor, *, iou_threshold: float, gt_only: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per instance and part, the box the heads crop during training.

    predicted, gt: [B, 3, 4] xyxy (before RoI expansion); gt_valid: [B, 3]. A predicted box is used
    only when not `gt_only` and its IoU with a valid GT box is >= `iou_threshold`; otherwise the
    GT box (where the part has no GT, the predicted box, whose loss weight is zero anyway).
    Returns (boxes [B, 3, 4], used_predicted [B, 3] bool).
    """
    valid = gt_valid > 0
    if gt_only:
        use_pred = torch.zeros_like(valid)
    else:
        use_pred = box_iou(predicted, gt) >= iou_threshold
    use_pred = use_pred | ~valid
    boxes = torch.where(use_pred[..., None], predicted, gt)
    return boxes, use_pred & valid


__all__ = ["box_iou", "choose_head_boxes", "resample_body_heatmaps", "warp_head_heatmaps", "weighted_mse"]
