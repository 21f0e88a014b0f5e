"""GFLOPs of an architecture for the searchers' budget check.

`gflops_parts(space)` returns a pure function arch -> {"body", "face", "hand", "total"}. It uses
`nasplat.flops.analytic_gflops` when that module is present and otherwise the conv-MAC count below,
which follows the same convention (G multiply-accumulates of conv layers, 2**30) and the HRNet
structure of DESIGN.md, so that searchers work before and without the flops module.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

from nasplat.space import Arch, SearchSpace
from nasplat.space.arch import HRNetArch

GflopsFn = Callable[[Arch], Mapping[str, float]]

_GIGA = float(2**30)
_BODY_KEYPOINTS = 38
_FACE_KEYPOINTS = 68
_HAND_KEYPOINTS = 21


def _conv(cin: int, cout: int, k: int, h: int, w: int, groups: int = 1) -> float:
    return float(cin // groups * cout * k * k * h * w)


def _hrnet_macs(net: HRNetArch, cin: int, h: int, w: int, blocks_per_module: int, v2_head: bool, outputs: int) -> float:
    """Conv MACs of an HRNet (no stem) on an h x w input of `cin` channels."""
    c, g = net.stage1_channels, net.stage1_groups
    macs = 0.0
    for i in range(net.depths[0]):
        inp = cin if i == 0 else 4 * c
        macs += _conv(inp, c, 1, h, w) + _conv(c, c, 3, h, w, g) + _conv(c, 4 * c, 1, h, w)
        if i == 0:
            macs += _conv(inp, 4 * c, 1, h, w)
    sizes = [(-(-h // 2**b), -(-w // 2**b)) for b in range(4)]
    chans, groups = net.branch_channels, net.branch_groups
    prev = [4 * c]
    for stage in range(1, 4):
        nb = stage + 1
        # transitions: new branch from the lowest previous branch (stride-2 3x3), others 3x3 if widths differ
        for b in range(nb):
            src = prev[min(b, len(prev) - 1)]
            if b >= len(prev) or src != chans[b]:
                bh, bw = sizes[b]
                macs += _conv(src, chans[b], 3, bh, bw)
        modules = max(1, net.depths[stage] // blocks_per_module)
        for _ in range(modules):
            for b in range(nb):
                bh, bw = sizes[b]
                macs += 2 * blocks_per_module * _conv(chans[b], chans[b], 3, bh, bw, groups[b])
            for i in range(nb):
                for j in range(nb):
                    if j > i:
                        jh, jw = sizes[j]
                        macs += _conv(chans[j], chans[i], 1, jh, jw)
                    elif j < i:
                        for step in range(i - j):
                            sh, sw = sizes[j + step + 1]
                            out = chans[i] if step == i - j - 1 else chans[j]
                            macs += _conv(chans[j], out, 3, sh, sw)
        prev = list(chans[:nb])
    if v2_head:
        total = sum(chans)
        macs += _conv(total, total, 1, h, w) + _conv(total, outputs, 1, h, w)
    else:
        macs += _conv(chans[0], outputs, 1, h, w)
    return macs


def rough_gflops(arch: Arch, space: SearchSpace) -> dict[str, float]:
    """Conv MACs / 2**30 of body, face and hand (face and hand: one shared hand head run twice)."""
    hb, wb = arch.body.input_size
    c0 = arch.body.stem_channels
    body = _conv(3, c0, 3, -(-hb // 2), -(-wb // 2)) + _conv(c0, c0, 3, -(-hb // 4), -(-wb // 4))
    fh, fw = arch.body.heatmap_size
    body += _hrnet_macs(arch.body.net, c0, fh, fw, space.blocks_per_module("body"), False, _BODY_KEYPOINTS)
    parts = {"body": body / _GIGA}
    for head, k, copies in (("face", _FACE_KEYPOINTS, 1), ("hand", _HAND_KEYPOINTS, 2)):
        h = arch.head(head)
        cin = arch.body.feature_channels(h.feature_stage)
        parts[head] = copies * _hrnet_macs(h.net, cin, h.resolution, h.resolution, space.blocks_per_module(head), True, k) / _GIGA
    parts["total"] = parts["body"] + parts["face"] + parts["hand"]
    return parts


def gflops_parts(space: SearchSpace) -> GflopsFn:
    """A cached function arch -> GFLOPs parts for `space` (analytic_gflops when available)."""
    try:
        from nasplat.flops import analytic_gflops  # type: ignore[attr-defined]
    except ImportError:  # the flops module is optional for the searchers
        analytic_gflops = None

    @functools.lru_cache(maxsize=65536)
    def parts(arch: Arch) -> Mapping[str, float]:
        if analytic_gflops is not None:
            result = analytic_gflops(arch, space)
            if isinstance(result, Mapping):
                return {k: float(v) for k, v in result.items()}
            return {"total": float(result)}
        return rough_gflops(arch, space)

    return parts


def total_gflops_fn(space: SearchSpace) -> Callable[[Arch], float]:
    """arch -> total GFLOPs, cached."""
    parts = gflops_parts(space)
    return lambda arch: float(parts(arch)["total"])
