"""Gaussian heatmap targets, batched and pure torch (the training loop calls them per subnet).

Pixel conventions (docs/DESIGN.md):
- body heatmap pixel (i, j) sits at body-input point (4j, 4i);
- head heatmap pixel (i, j) of box (x1, y1, x2, y2) at resolution R sits at
  (x1 + (j + 0.5)(x2 - x1)/R, y1 + (i + 0.5)(y2 - y1)/R).
"""

from __future__ import annotations

import torch

from nasplat.data.keypoints import NUM_BODY_KEYPOINTS

BODY_STRIDE = 4


def _gaussians(
    centers: torch.Tensor, height: int, width: int, sigma: float | torch.Tensor
) -> torch.Tensor:
    """Unnormalised Gaussians (peak 1) at `centers` [B, K, 2] (heatmap pixels, x, y) -> [B, K, h, w].
    `sigma` is one number or one per keypoint ([K])."""
    ys = torch.arange(height, dtype=centers.dtype, device=centers.device)  # [h]
    xs = torch.arange(width, dtype=centers.dtype, device=centers.device)  # [w]
    two_var = 2 * torch.as_tensor(sigma, dtype=centers.dtype, device=centers.device) ** 2
    two_var = two_var.reshape(-1, 1) if two_var.dim() else two_var  # [K, 1] or []
    gx = torch.exp(-((xs[None, None, :] - centers[..., 0:1]) ** 2) / two_var)  # [B, K, w]
    gy = torch.exp(-((ys[None, None, :] - centers[..., 1:2]) ** 2) / two_var)  # [B, K, h]
    return gy[..., :, None] * gx[..., None, :]  # [B, K, h, w]


def box_keypoints(part_boxes: torch.Tensor) -> torch.Tensor:
    """The 5 box keypoints of each part box [B, 3, 4] (xyxy) -> [B, 15, 2]: per part
    top-left, top-right, bottom-right, bottom-left, centre (the BodyNet channel order)."""
    x1, y1, x2, y2 = part_boxes.unbind(-1)  # each [B, 3]
    pts = torch.stack(
        [
            torch.stack([x1, y1], -1),
            torch.stack([x2, y1], -1),
            torch.stack([x2, y2], -1),
            torch.stack([x1, y2], -1),
            torch.stack([(x1 + x2) * 0.5, (y1 + y2) * 0.5], -1),
        ],
        dim=2,
    )  # [B, 3, 5, 2]
    return pts.reshape(part_boxes.shape[0], 15, 2)


def body_targets(
    keypoints: torch.Tensor,
    part_boxes: torch.Tensor,
    part_valid: torch.Tensor,
    input_size: tuple[int, int],
    sigma: float = 3.0,
    box_sigma: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BodyNet targets: 23 body/foot keypoints and 5 box keypoints per part box.

    keypoints [B, 133, 3] (x, y in body-input pixels, v > 0 labeled); part_boxes [B, 3, 4] xyxy
    body-input pixels (face, left hand, right hand); part_valid [B, 3]; input_size (H, W) of the
    body input these coordinates refer to; sigma in heatmap pixels, `box_sigma` that of the 15
    box keypoints (default: `sigma`). A hand box can be two heatmap pixels wide: Gaussians as wide
    as the box make its corners indistinguishable, and the decoded box collapses to a point.
    Returns target [B, 38, ceil(H/4), ceil(W/4)] and weight [B, 38]: weight 0 (and target 0) for
    unlabeled points, points of an invalid part, and points outside the heatmap.
    """
    in_h, in_w = input_size
    h, w = -(-in_h // BODY_STRIDE), -(-in_w // BODY_STRIDE)
    kp = keypoints[:, :NUM_BODY_KEYPOINTS].to(torch.float32)  # [B, 23, 3]
    box_pts = box_keypoints(part_boxes.to(torch.float32))  # [B, 15, 2]
    pts = torch.cat([kp[..., :2], box_pts], dim=1) / BODY_STRIDE  # [B, 38, 2] heatmap px
    labeled = torch.cat(
        [kp[..., 2] > 0, (part_valid.to(torch.float32) > 0).repeat_interleave(5, dim=1)], dim=1
    )  # [B, 38]
    inside = (
        (pts[..., 0] >= -0.5) & (pts[..., 0] < w - 0.5) & (pts[..., 1] >= -0.5) & (pts[..., 1] < h - 0.5)
    )
    weight = (labeled & inside).to(torch.float32)  # [B, 38]
    sigmas: float | torch.Tensor = sigma
    if box_sigma is not None and box_sigma != sigma:
        sigmas = torch.tensor([sigma] * NUM_BODY_KEYPOINTS + [box_sigma] * box_pts.shape[1])  # [38]
    target = _gaussians(pts, h, w, sigmas) * weight[..., None, None]  # [B, 38, h, w]
    return target, weight


def render_in_boxes(
    keypoints: torch.Tensor, boxes: torch.Tensor, resolution: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head targets: keypoints [B, K, 3] (body-input pixels, v > 0 labeled) rendered in the
    R x R grid of `boxes` [B, 4] (xyxy body-input pixels) with the head pixel convention.

    Returns heatmaps [B, K, R, R] and weights [B, K]: weight 0 (and heatmap 0) for unlabeled
    points, points outside their box, and every point of a degenerate box. Sigma is in head
    heatmap pixels.
    """
    kp = keypoints.to(torch.float32)
    boxes = boxes.to(torch.float32)
    x1, y1, x2, y2 = (boxes[:, i : i + 1] for i in range(4))  # each [B, 1]
    bw, bh = x2 - x1, y2 - y1
    ok_box = (bw > 0) & (bh > 0)  # [B, 1]
    safe_w = torch.where(ok_box, bw, torch.ones_like(bw))
    safe_h = torch.where(ok_box, bh, torch.ones_like(bh))
    gx = (kp[..., 0] - x1) * resolution / safe_w - 0.5  # [B, K]
    gy = (kp[..., 1] - y1) * resolution / safe_h - 0.5
    inside = (kp[..., 0] >= x1) & (kp[..., 0] <= x2) & (kp[..., 1] >= y1) & (kp[..., 1] <= y2)
    weight = ((kp[..., 2] > 0) & inside & ok_box).to(torch.float32)  # [B, K]
    heat = _gaussians(torch.stack([gx, gy], -1), resolution, resolution, sigma)  # [B, K, R, R]
    return heat * weight[..., None, None], weight
