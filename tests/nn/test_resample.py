"""`nn.resample.resize` computes what F.interpolate does, forward and backward, in every layout and
under tracing; the HRNet fusion that uses it leaves its inputs alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nasplat.nn import HRModule
from nasplat.nn.resample import resize

SIZES = [  # (input h, w), output (H, W): integer factors, uneven ratios, a downscale, one unchanged side
    ((4, 3), (32, 24)),
    ((16, 12), (32, 24)),
    ((5, 7), (17, 9)),
    ((8, 6), (3, 4)),
    ((6, 6), (6, 12)),
]


def _interpolate(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


@pytest.mark.parametrize(("hw", "size"), SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resize_equals_interpolate_forward_and_backward(hw: tuple[int, int], size: tuple[int, int], dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, *hw, generator=gen, dtype=dtype, requires_grad=True)
    grad = torch.randn(3, 5, *size, generator=gen, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for mode in ("nearest", "bilinear"):
        ours = resize(x, size, mode)
        (g_ours,) = torch.autograd.grad(ours, x, grad)
        ref = _interpolate(x, size, mode)
        (g_ref,) = torch.autograd.grad(ref, x, grad)
        assert ours.shape == ref.shape and ours.dtype == dtype
        if mode == "nearest":  # 1.0 times one input plus zeros: exact
            assert torch.equal(ours, ref)
        else:
            torch.testing.assert_close(ours, ref, rtol=0, atol=tol)
        torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=10 * tol)


def test_matrices_first_made_under_inference_mode_still_train() -> None:
    """The cached matrices may first be made under torch.inference_mode (latency timing), then
    serve a training forward whose backward saves them."""
    with torch.inference_mode():
        for mode in ("nearest", "bilinear"):
            resize(torch.randn(1, 2, 7, 5), (13, 11), mode)
    x = torch.randn(1, 2, 7, 5, requires_grad=True)
    for mode in ("nearest", "bilinear"):
        resize(x * 2, (13, 11), mode).sum().backward()
    assert x.grad is not None


def test_channels_last_input_keeps_its_layout() -> None:
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    for mode in ("nearest", "bilinear"):
        y = resize(x, (12, 10), mode)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, _interpolate(x, (12, 10), mode), rtol=0, atol=1e-6)


def test_bf16_autocast_runs_in_bf16_close_to_fp32() -> None:
    x = torch.randn(2, 4, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = resize(x, (24, 24), "bilinear")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), _interpolate(x, (24, 24), "bilinear"), rtol=0.02, atol=0.02)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
def test_a_traced_graph_keeps_one_resize_op() -> None:
    """The ONNX export traces: it must see F.interpolate (one Resize), not the matmuls."""
    def f(x: torch.Tensor) -> torch.Tensor:
        return resize(x, (8, 6), "nearest") + resize(x, (8, 6), "bilinear")

    graph = str(torch.jit.trace(f, torch.randn(1, 2, 4, 3)).graph)
    assert "upsample_nearest2d" in graph and "upsample_bilinear2d" in graph
    assert "matmul" not in graph


def test_fusion_leaves_the_branch_outputs_alone_and_backpropagates() -> None:
    torch.manual_seed(0)
    module = HRModule.elastic([4, 6, 8], 1)
    module.set_active([4, 6, 8], [1, 1, 1], 3)
    static = module.to_static().eval()
    xs = [torch.randn(2, c, 16 // 2**b, 12 // 2**b, requires_grad=True) for b, c in enumerate([4, 6, 8])]
    before = [x.detach().clone() for x in xs]
    outs = [static.fused(i, xs) for i in range(3)]
    for x, b in zip(xs, before):
        assert torch.equal(x, b)
    for i, out in enumerate(outs):  # the same sum without any in-place op
        expected = xs[i]
        for j, x in enumerate(xs):
            if j > i:
                expected = expected + _interpolate(static.fuse[i][j](x), tuple(xs[i].shape[-2:]), "nearest")
            elif j < i:
                expected = expected + static.fuse[i][j](x)
        torch.testing.assert_close(out, F.relu(expected), rtol=0, atol=1e-6)
    sum(o.sum() for o in outs).backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in xs)
