"""Resizing feature maps as two small matrix products, for the fusions that upsample branches.

Nearest and bilinear (`align_corners=False`) resizing of a [B, C, h, w] map to [B, C, H, W] is
separable: out = A_h @ x @ A_w^T, with A_h [H, h] and A_w [W, w] the 1-D resampling matrices; for
nearest, the product with A_h is a gather of whole rows, done as one. On CPU, PyTorch's upsample
kernels copy a contiguous NCHW input into another layout and back, and bilinear's backward
scatters into the small input. Over the resize calls of BN recalibration and one prediction of
the quickstart evaluator (`benchmarks/bench_resample.py`: their shapes, timed one by one) this ran
4.4x (nearest) and 2.7x (bilinear) faster forward, 1.8x and 3.2x forward + backward;
`benchmarks/bench_eval_roofline.py` measures what that is worth to a whole prediction, and books
the `RESIZE_RANGE` it runs under as upsampling.

The matrices are F.interpolate applied to an identity, so they carry exactly PyTorch's index and
weight convention. Nearest resizing is then exact (each output is 1.0 times one input plus zeros);
bilinear equals F.interpolate up to float rounding (within 2e-6 on unit-variance inputs), and so
does its gradient. Under tracing (the ONNX export) and for channels_last inputs, F.interpolate
itself runs: the graph keeps one Resize op, and the channels_last kernels need no layout copy.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Mode = Literal["nearest", "bilinear"]

RESIZE_RANGE = "nasplat.resize"  # the matmul path, as torch.profiler names it

__all__ = ["RESIZE_RANGE", "recording_graph", "resize"]


@lru_cache(maxsize=256)
def _matrix(n_in: int, n_out: int, mode: Mode, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n_out, n_in]: column k is where input sample k lands in the resized row."""
    # in float64: the weights of a ratio such as 5/17 are then rounded once, to `dtype`
    extra = {} if mode == "nearest" else {"align_corners": False}
    # cached for every later call: never an inference tensor, which autograd could not save
    with torch.inference_mode(False), torch.no_grad():
        eye = torch.eye(n_in, dtype=torch.float64, device=device)[None, None]  # [1, 1, n_in, n_in]
        rows = F.interpolate(eye, size=(n_in, n_out), mode=mode, **extra)[0, 0]  # [n_in, n_out]
        return rows.t().contiguous().to(dtype)


@lru_cache(maxsize=256)
def _source_rows(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """[n_out] int64: the input row nearest resizing copies into each output row."""
    with torch.inference_mode(False):  # as in _matrix
        return _matrix(n_in, n_out, "nearest", torch.float64, device).argmax(dim=1)


def recording_graph() -> bool:
    """Whether the ops run into a graph (torch.jit trace or script, ONNX export) rather than
    eagerly: eager-only shortcuts (matmul resizing, NHWC layout tricks) must stay out of it."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def resize(x: Tensor, size: tuple[int, int] | torch.Size, mode: Mode) -> Tensor:
    """x [B, C, h, w] -> [B, C, *size], resized as F.interpolate(x, size, mode) does (bilinear
    with align_corners=False)."""
    if recording_graph() or x.dim() != 4 or not x.is_contiguous():
        # `size` as given: a traced graph keeps the sizes it takes from shapes
        if mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    with torch.profiler.record_function(RESIZE_RANGE):
        return _resize(x, int(size[0]), int(size[1]), mode)


def _resize(x: Tensor, height: int, width: int, mode: Mode) -> Tensor:
    b, c, h, w = x.shape
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    a_w = _matrix(w, width, mode, dtype, x.device)  # [W, w]
    y = (x.reshape(b * c * h, w) @ a_w.t()).view(b * c, h, width)  # [BCh, w] @ [w, W]
    if mode == "nearest":  # each output row is one input row: gather rows (2-3x faster than a bmm)
        return y.index_select(1, _source_rows(h, height, x.device)).view(b, c, height, width)
    a_h = _matrix(h, height, mode, dtype, x.device)  # [H, h]
    return torch.matmul(a_h, y).view(b, c, height, width)  # [H, h] @ [BC, h, W]
