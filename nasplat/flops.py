"""GFLOPs of ZoomNet subnets: analytic (from the Arch alone) and fvcore (traced static subnet).

GFLOPs follow the HRNet papers (wholebody_facts.md 4.3): multiply-adds of conv and linear layers
only, divided by 2**30. Batch norm, upsampling, RoIAlign and elementwise ops count zero.
`total = body + face + 2 * hand` (the one HandHead runs once per hand).

The analytic count walks the same structure as `nasplat.models` (stem, stage-1 Bottlenecks,
transitions, HRNet modules with SUM fusion, the single-output last BodyNet module, the HRNetV2
head) with whole-number arithmetic, grouping identical layers so one arch costs microseconds.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nasplat.errors import ArchError
from nasplat.space.arch import Arch, HRNetArch

__all__ = ["GFlops", "analytic_gflops", "analytic_params", "fvcore_gflops"]

GIGA = 2**30
NUM_BODY_KEYPOINTS = 38
NUM_FACE_KEYPOINTS = 68
NUM_HAND_KEYPOINTS = 21


@dataclass(frozen=True)
class GFlops:
    """Conv + linear multiply-adds / 2**30 per module; `total` counts the HandHead twice."""

    body: float
    face: float
    hand: float
    total: float

    def as_dict(self) -> dict[str, float]:
        return {"body": self.body, "face": self.face, "hand": self.hand, "total": self.total}

    @classmethod
    def of(cls, body: float, face: float, hand: float) -> GFlops:
        return cls(body, face, hand, body + face + 2 * hand)


# A layer record: (count, in_channels, out_channels, kernel, groups, out_pixels, has_bn).
# has_bn False means a plain conv with bias (the final 1x1 convs).
_Layer = tuple[int, int, int, int, int, int, bool]


def _half(n: int) -> int:
    return (n + 1) // 2  # a 3x3 stride-2 conv with padding 1


def _trunk(cin: int, net: HRNetArch, bpm: int, h: int, w: int, multi_scale_last: bool) -> Iterator[_Layer]:
    width, g1, d1 = net.stage1_channels, net.stage1_groups, net.depths[0]
    hw = h * w
    # stage 1: the first Bottleneck reads cin and has a 1x1 shortcut conv; the rest read 4C
    yield (1, cin, width, 1, 1, hw, True)
    yield (1, cin, 4 * width, 1, 1, hw, True)
    if d1 > 1:
        yield (d1 - 1, 4 * width, width, 1, 1, hw, True)
    yield (d1, width, width, 3, g1, hw, True)
    yield (d1, width, 4 * width, 1, 1, hw, True)
    sizes = [(h, w)]
    for _ in range(3):
        sizes.append((_half(sizes[-1][0]), _half(sizes[-1][1])))
    px = [a * b for a, b in sizes]
    c, g = net.branch_channels, net.branch_groups
    yield (1, 4 * width, c[0], 3, 1, px[0], True)
    yield (1, 4 * width, c[1], 3, 1, px[1], True)
    for s in (1, 2, 3):
        nb = s + 1
        if s > 1:
            yield (1, c[s - 1], c[s], 3, 1, px[s], True)
        depth = net.depths[s]
        if depth < bpm or depth % bpm:
            raise ArchError(f"stage{s + 1}.depth {depth} is not a positive multiple of blocks_per_module {bpm}")
        n_modules = depth // bpm
        for b in range(nb):
            yield (2 * bpm * n_modules, c[b], c[b], 3, g[b], px[b], True)
        single_last = s == 3 and not multi_scale_last
        for i in range(nb):
            # every module fuses into branch 1; a single-output last module fuses into nothing else
            count = n_modules - 1 if (single_last and i > 0) else n_modules
            if count == 0:
                continue
            for j in range(nb):
                if j > i:
                    yield (count, c[j], c[i], 1, 1, px[j], True)
                elif j < i:
                    for k in range(i - j):
                        yield (count, c[j], c[i] if k == i - j - 1 else c[j], 3, 1, px[j + k + 1], True)


def _body_layers(arch: Arch, bpm: int) -> Iterator[_Layer]:
    body = arch.body
    h, w = body.input_size
    c0 = body.stem_channels
    h2, w2 = _half(h), _half(w)
    h4, w4 = _half(h2), _half(w2)
    yield (1, 3, c0, 3, 1, h2 * w2, True)
    yield (1, c0, c0, 3, 1, h4 * w4, True)
    yield from _trunk(c0, body.net, bpm, h4, w4, multi_scale_last=False)
    yield (1, body.net.branch_channels[0], NUM_BODY_KEYPOINTS, 1, 1, h4 * w4, False)


def _head_layers(arch: Arch, name: str, bpm: int, num_keypoints: int) -> Iterator[_Layer]:
    head = arch.head(name)
    r = head.resolution
    cin = arch.body.feature_channels(head.feature_stage)
    yield from _trunk(cin, head.net, bpm, r, r, multi_scale_last=True)
    width = sum(head.net.branch_channels)
    yield (1, width, width, 1, 1, r * r, True)
    yield (1, width, num_keypoints, 1, 1, r * r, False)


def _macs(layers: Iterator[_Layer]) -> int:
    return sum(n * cout * (cin // g) * k * k * px for n, cin, cout, k, g, px, _ in layers)


def _params(layers: Iterator[_Layer]) -> int:
    # conv weight, plus BN weight + bias or the conv bias
    return sum(n * (cout * (cin // g) * k * k + (2 * cout if bn else cout)) for n, cin, cout, k, g, _, bn in layers)


def _bpm(blocks_per_module: tuple[int, int, int] | int) -> tuple[int, int, int]:
    if isinstance(blocks_per_module, int):
        return (blocks_per_module,) * 3
    return tuple(blocks_per_module)  # type: ignore[return-value]


def analytic_gflops(arch: Arch, blocks_per_module: tuple[int, int, int] | int = 4) -> GFlops:
    """GFLOPs of `arch` computed from its sizes alone (no torch modules).

    `blocks_per_module` is (body, face, hand) or one number for all; the paper's spaces use 4.
    Raises ArchError when a stage depth is not a positive multiple of it.
    """
    bb, bf, bh = _bpm(blocks_per_module)
    body = _macs(_body_layers(arch, bb)) / GIGA
    face = _macs(_head_layers(arch, "face", bf, NUM_FACE_KEYPOINTS)) / GIGA
    hand = _macs(_head_layers(arch, "hand", bh, NUM_HAND_KEYPOINTS)) / GIGA
    return GFlops.of(body, face, hand)


def analytic_params(arch: Arch, blocks_per_module: tuple[int, int, int] | int = 4) -> int:
    """Parameters of the static subnet of `arch` (the HandHead once: both hands share it)."""
    bb, bf, bh = _bpm(blocks_per_module)
    return (
        _params(_body_layers(arch, bb))
        + _params(_head_layers(arch, "face", bf, NUM_FACE_KEYPOINTS))
        + _params(_head_layers(arch, "hand", bh, NUM_HAND_KEYPOINTS))
    )


def fvcore_gflops(
    model_or_arch: Any,
    blocks_per_module: tuple[int, int, int] | int | None = None,
) -> GFlops:
    """GFLOPs counted by fvcore's FlopCountAnalysis on the static subnet, one module at a time.

    `model_or_arch` is an `Arch` (a static net is built; give `blocks_per_module`), a static
    `ZoomNet`, or a `ZoomNetSupernet` (its active arch is extracted). Batch-norm and upsampling
    handles are disabled, so the count is conv + linear multiply-adds as in `analytic_gflops`.
    Raises ArchError when an Arch is given without `blocks_per_module` or does not build.
    """
    # torch (and nasplat.models, which imports it) only here: the analytic count, and with it
    # nasplat.search.cost and the search driver, imports without torch
    import torch

    from nasplat.models.zoomnet import ZoomNet, ZoomNetSupernet, build_static

    if isinstance(model_or_arch, Arch):
        if blocks_per_module is None:
            raise ArchError("fvcore_gflops(arch) needs blocks_per_module")
        # the weights do not matter for counting: build on the meta device (no init work), then
        # give the layers defined storage: zero weights (no inf/NaN or denormals in the trace),
        # unit BN variances
        with torch.device("meta"):
            model = build_static(model_or_arch, blocks_per_module)
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for param in model.parameters():
                param.zero_()
            for buffer in model.buffers():
                buffer.fill_(1 if buffer.is_floating_point() else 0)
    elif isinstance(model_or_arch, ZoomNetSupernet):
        model = model_or_arch.extract()
    elif isinstance(model_or_arch, ZoomNet):
        model = model_or_arch
    else:
        raise TypeError(f"expected an Arch, ZoomNet or ZoomNetSupernet, got {type(model_or_arch).__name__}")
    arch = model.arch
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        h, w = arch.body.input_size
        body = _count(_heatmaps_only(model.body), torch.zeros(1, 3, h, w, device=device))
        heads = []
        for name in ("face", "hand"):
            head = arch.head(name)
            cin = arch.body.feature_channels(head.feature_stage)
            heads.append(_count(getattr(model, name), torch.zeros(1, cin, head.resolution, head.resolution, device=device)))
    finally:
        model.train(was_training)
    return GFlops.of(body / GIGA, heads[0] / GIGA, heads[1] / GIGA)


def _heatmaps_only(body: Any) -> Any:
    """BodyNet wrapped so the traced output is one tensor (fvcore traces tensor outputs only)."""
    import torch

    class HeatmapsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)[0]

    return HeatmapsOnly()


def _count_nothing(inputs: Any, outputs: Any) -> Counter[str]:
    return Counter()


def _count(module: Any, example: Any) -> int:
    import torch

    with warnings.catch_warnings():
        # fvcore scripts and traces with torch.jit, deprecated in recent torch: it warns at import
        # and during the trace, but the trace itself still works
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        with torch.no_grad():
            analysis = FlopCountAnalysis(module, example)
            for op in (
                "aten::batch_norm",
                "aten::upsample_nearest2d",
                "aten::upsample_bilinear2d",
                "aten::_upsample_nearest_exact2d",
            ):
                # set_op_handle(op, None) leaves fvcore's default handle in place, so it would
                # still count; a handle that counts nothing really removes the op
                analysis.set_op_handle(op, _count_nothing)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            return int(analysis.total())
