"""The torch module and example inputs of each latency unit, built from the layers the nets use.

`unit_module(unit, batch)` returns a static module in eval mode made of the very classes a static
ZoomNet holds (`ConvBN`, `Bottleneck`, `BasicBlock`, `HRModule.fused`, `HRNetV2Head.combine`,
`decode_part_boxes`, `roi_align`), with random weights, and the inputs it runs on at `batch`
persons. Every module's forward takes and returns plain tensors, so each exports to ONNX.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nasplat.latency.units import Unit
from nasplat.models.boxes import decode_part_boxes, expand_boxes
from nasplat.models.roi_align import roi_align
from nasplat.models.zoomnet import FEATURE_STRIDE, HRNetV2Head
from nasplat.nn.blocks import BasicBlock, Bottleneck
from nasplat.nn.elastic import ConvBN, ElasticConv2d
from nasplat.nn.hrnet import HRModule

__all__ = ["unit_module"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> ConvBN:
    return ConvBN.elastic(cin, cout, k, stride, relu=relu).to_static()


class _Chain(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class _Transition1(nn.Module):
    """Stage 1 output -> the two branches of stage 2."""

    def __init__(self, cin: int, c1: int, c2: int) -> None:
        super().__init__()
        self.to1 = _conv(cin, c1, 3)
        self.to2 = _conv(cin, c2, 3, 2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.to1(x), self.to2(x)


class _Fused(nn.Module):
    """Output i of an HRNet module's SUM fusion (`HRModule.fused`) on the branch outputs."""

    def __init__(self, chans: tuple[int, ...], i: int) -> None:
        super().__init__()
        module = HRModule.elastic(chans, 1)
        module.set_active(chans, (1,) * len(chans), len(chans))
        self.module = module.to_static()
        self.i = i

    def forward(self, *xs: Tensor) -> Tensor:
        return self.module.fused(self.i, list(xs))


class _HeadCombine(nn.Module):
    """An HRNetV2 head after its trunk (`HRNetV2Head.combine`)."""

    def __init__(self, chans: tuple[int, ...], k: int) -> None:
        super().__init__()
        width = sum(chans)
        self.head = HRNetV2Head(nn.Identity(), _conv(width, width, 1), ElasticConv2d(width, k, 1, bias=True).to_static())  # type: ignore[arg-type]

    def forward(self, *branches: Tensor) -> Tensor:
        return self.head.combine(list(branches))


class _Boxes(nn.Module):
    """Part boxes decoded from BodyNet's heatmaps and grown by the RoI expansions."""

    def forward(self, heatmaps: Tensor) -> Tensor:
        boxes = decode_part_boxes(heatmaps, FEATURE_STRIDE)  # [B, 3, 4]
        return torch.cat((expand_boxes(boxes[:, :1], 1.2), expand_boxes(boxes[:, 1:], 1.2)), dim=1)


class _Roi(nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, features: Tensor, boxes: Tensor) -> Tensor:
        return roi_align(features, boxes, self.r, FEATURE_STRIDE, 1).flatten(0, 1)  # [B * P, C, R, R]


def _branch_inputs(n: int, chans: tuple[int, ...], h: int, w: int) -> tuple[Tensor, ...]:
    out = []
    for c in chans:
        out.append(torch.randn(n, c, h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return tuple(out)


def unit_module(unit: Unit, batch: int) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The eval-mode module of `unit` and its example inputs at `batch` persons (x the unit's
    batch multiple). Raises ValueError for an unknown unit kind."""
    s = dict(unit.sizes)
    n = batch * int(s.get("m", 1))  # type: ignore[arg-type]
    kind = unit.kind
    if kind == "stem":
        c, h, w = s["c"], s["h"], s["w"]
        module: nn.Module = _Chain(_conv(3, c, 3, 2), _conv(c, c, 3, 2))
        inputs: tuple[Tensor, ...] = (torch.randn(n, 3, h, w),)
    elif kind == "bottleneck":
        cin, c, g = s["cin"], s["c"], s["g"]
        block = Bottleneck.elastic(cin, c, downsample=bool(s["down"]))
        block.set_active(cin, c, g)
        module, inputs = block.to_static(), (torch.randn(n, cin, s["h"], s["w"]),)
    elif kind == "transition1":
        module, inputs = _Transition1(s["cin"], s["c1"], s["c2"]), (torch.randn(n, s["cin"], s["h"], s["w"]),)
    elif kind == "transition":
        module, inputs = _conv(s["cin"], s["cout"], 3, 2), (torch.randn(n, s["cin"], s["h"], s["w"]),)
    elif kind == "basic":
        c, g = s["c"], s["g"]
        block = BasicBlock.elastic(c, c)
        block.set_active(c, c, g)
        module, inputs = block.to_static(), (torch.randn(n, c, s["h"], s["w"]),)
    elif kind == "fuse":
        chans = s["chans"]
        module, inputs = _Fused(chans, s["i"]), _branch_inputs(n, chans, s["h"], s["w"])  # type: ignore[arg-type]
    elif kind == "final":
        module = ElasticConv2d(s["cin"], s["k"], 1, bias=True).to_static()
        inputs = (torch.randn(n, s["cin"], s["h"], s["w"]),)
    elif kind == "boxes":
        module, inputs = _Boxes(), (torch.randn(n, 38, s["h"], s["w"]),)
    elif kind == "roi":
        h, w, p = s["h"], s["w"], s["p"]
        gen = torch.Generator().manual_seed(0)
        corner = torch.rand(n, p, 2, generator=gen) * torch.tensor([4.0 * w, 4.0 * h]) * 0.6
        size = 8 + torch.rand(n, p, 2, generator=gen) * 16
        module, inputs = _Roi(s["r"]), (torch.randn(n, s["c"], h, w), torch.cat((corner, corner + size), dim=-1))
    elif kind == "head_fuse":
        chans = s["chans"]
        module, inputs = _HeadCombine(chans, s["k"]), _branch_inputs(n, chans, s["r"], s["r"])  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown latency unit kind {kind!r}")
    return module.eval(), inputs
