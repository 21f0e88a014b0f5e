"""RoIAlign in plain torch (`grid_sample`), with the coordinate conventions of DESIGN.md.

Feature pixel (i, j) sits at input point (stride * j, stride * i). Output pixel (i, j) of a box
(x1, y1, x2, y2) at resolution R samples the feature map bilinearly at the input point
(x1 + (j + 0.5) (x2 - x1) / R, y1 + (i + 0.5) (y2 - y1) / R). With `sampling_ratio` s > 1 each
output pixel averages an s x s grid of such points spread evenly over its bin. Points outside the
feature map read zeros (bilinear weights on missing pixels count as zero).

Only standard ops (arithmetic, stack/expand, `grid_sample`, `avg_pool2d`), so an exported subnet's
RoIAlign becomes ONNX GridSample (opset >= 16) inside the one graph (`nasplat.subnet.onnx_export`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nasplat.nn.resample import recording_graph

__all__ = ["roi_align"]

_FRACTIONS: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def _fractions(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(k + 0.5) / n for k < n, cached so the hot path allocates no index tensors."""
    key = (n, device, dtype)
    cached = _FRACTIONS.get(key)
    if cached is None:
        cached = (torch.arange(n, device=device, dtype=dtype) + 0.5) / n
        _FRACTIONS[key] = cached
    return cached


def _channels_last(x: Tensor) -> bool:
    """Whether `x` is laid out NHWC (not also NCHW), outside tracing: an exported graph stays NCHW."""
    if recording_graph():
        return False
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def roi_align(
    features: Tensor,
    boxes: Tensor,
    output_size: int,
    stride: float = 4.0,
    sampling_ratio: int = 1,
) -> Tensor:
    """Crop `boxes` out of `features` and resize each to `output_size` x `output_size`.

    features: [B, C, H, W]; boxes: [B, P, 4] xyxy in input pixels (P boxes per image).
    Returns [B, P, C, R, R]. Raises ValueError on mismatched shapes or sampling_ratio < 1.
    """
    if features.dim() != 4 or boxes.dim() != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != features.shape[0]:
        raise ValueError(f"expected features [B, C, H, W] and boxes [B, P, 4], got {tuple(features.shape)} and {tuple(boxes.shape)}")
    if sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be >= 1, got {sampling_ratio}")
    b, c, h, w = features.shape
    p = boxes.shape[1]
    n = output_size * sampling_ratio
    # Sampling points in at least fp32: bf16 holds a 300-pixel coordinate only to about a pixel.
    # Under autocast the features arrive in bf16 / fp16 and are sampled in fp32 too.
    dtype = torch.promote_types(features.dtype, torch.float32)
    features = features.to(dtype)
    t = _fractions(n, features.device, dtype)  # [n]
    boxes = boxes.to(dtype)
    x1, y1, x2, y2 = boxes.unbind(-1)  # each [B, P]
    xs = (x1[..., None] + t * (x2 - x1)[..., None]) / stride  # [B, P, n] feature pixels
    ys = (y1[..., None] + t * (y2 - y1)[..., None]) / stride  # [B, P, n]
    # align_corners=False: normalised g maps to pixel ((g + 1) * size - 1) / 2
    gx = (2 * xs + 1) / w - 1
    gy = (2 * ys + 1) / h - 1
    grid = torch.stack(
        (gx[:, :, None, :].expand(b, p, n, n), gy[:, :, :, None].expand(b, p, n, n)), dim=-1
    )  # [B, P, n (rows: y), n (cols: x), 2]
    out = F.grid_sample(
        features, grid.reshape(b, p * n, n, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )  # [B, C, P * n, n]
    out = out.view(b, c, p, n, n)
    if _channels_last(features):
        # NHWC features feed NHWC convs: lay the crops out so (one copy here, where each conv that
        # reads an NCHW crop would make its own, and flattening P into B is then free)
        out = out.permute(0, 2, 3, 4, 1).contiguous().permute(0, 1, 4, 2, 3)  # [B, P, C, n, n], C innermost
    else:
        out = out.transpose(1, 2)  # [B, P, C, n, n]
    if sampling_ratio > 1:
        out = F.avg_pool2d(out.reshape(b * p, c, n, n), sampling_ratio)  # [B * P, C, R, R]
        out = out.view(b, p, c, output_size, output_size)
    return out
