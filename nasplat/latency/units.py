"""The building blocks ("units") a ZoomNet subnet runs, keyed by shape: what a latency table times.

A `Unit` is one piece of the forward pass with every size that changes its cost: the stem, one
stage-1 Bottleneck, a transition, one BasicBlock of one branch, one fused output of an HRNet
module (SUM of the other branches' resampled maps + ReLU), BodyNet's final 1x1 conv, the box
decoding, one RoIAlign crop, an HRNetV2 head's concat-fuse-final. Spatial sizes and the batch
multiple (`m`: 1 for BodyNet and the FaceHead, 2 for the HandHead, which runs both hands as one
batch) are part of the key; the table's batch B multiplies them all.

`units_of(arch, bpm)` lists the units an arch runs, in forward order, tagged with the net
(body / face / hand) they belong to; it walks the same structure as `nasplat.models`
(`tests/latency` checks the units' MACs against `analytic_gflops`). `space_units(space)` is every
distinct unit any subnet of the space can contain, enumerated from the space's choices without
listing archs. Both are pure (no torch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from nasplat.space import Arch, SearchSpace
from nasplat.space.arch import HEADS, BodyArch, HeadArch, HRNetArch, feature_stage_channels

__all__ = ["HEAD_BATCH", "KEYPOINTS", "Unit", "body_units", "head_units", "space_units", "units_of"]

KEYPOINTS = {"body": 38, "face": 68, "hand": 21}
HEAD_BATCH = {"face": 1, "hand": 2}  # images per person each head runs on (RoIs per image)
_PARTS = {"face": 1, "hand": 2}  # boxes each head crops per person (models.boxes: face, left, right hand)


@dataclass(frozen=True, order=True)
class Unit:
    """One timed building block: its kind and its sizes, as sorted (name, value) pairs."""

    kind: str
    sizes: tuple[tuple[str, int | tuple[int, ...]], ...]

    @classmethod
    def of(cls, kind: str, **sizes: int | tuple[int, ...]) -> Unit:
        return cls(kind, tuple(sorted(sizes.items())))

    def get(self, name: str) -> int | tuple[int, ...]:
        return dict(self.sizes)[name]

    @property
    def key(self) -> str:
        """Canonical text key, e.g. `basic(c=16,g=2,h=32,m=1,w=24)` (the table's entry name)."""
        def text(v: int | tuple[int, ...]) -> str:
            return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)

        return f"{self.kind}(" + ",".join(f"{k}={text(v)}" for k, v in self.sizes) + ")"


def _half(n: int) -> int:
    return (n + 1) // 2  # a 3x3 stride-2 conv with padding 1


def _branch_sizes(h: int, w: int) -> list[tuple[int, int]]:
    sizes = [(h, w)]
    for _ in range(3):
        sizes.append((_half(sizes[-1][0]), _half(sizes[-1][1])))
    return sizes


def _trunk(cin: int, net: HRNetArch, bpm: int, h: int, w: int, m: int, multi_scale_last: bool) -> Iterator[Unit]:
    """The units of `HRNetTrunk` on a [m*B, cin, h, w] input."""
    width, g1 = net.stage1_channels, net.stage1_groups
    for d in range(net.depths[0]):
        first = d == 0
        yield Unit.of("bottleneck", cin=cin if first else 4 * width, c=width, g=g1, down=int(first), h=h, w=w, m=m)
    sizes = _branch_sizes(h, w)
    c, g = net.branch_channels, net.branch_groups
    yield Unit.of("transition1", cin=4 * width, c1=c[0], c2=c[1], h=h, w=w, m=m)
    for s in (1, 2, 3):
        nb = s + 1
        if s > 1:
            hs, ws = sizes[s - 1]
            yield Unit.of("transition", cin=c[s - 1], cout=c[s], h=hs, w=ws, m=m)
        n_modules = net.depths[s] // bpm
        for module in range(n_modules):
            for b in range(nb):
                hb, wb = sizes[b]
                for _ in range(bpm):
                    yield Unit.of("basic", c=c[b], g=g[b], h=hb, w=wb, m=m)
            last = s == 3 and module == n_modules - 1
            outputs = nb if multi_scale_last or not last else 1
            for i in range(outputs):
                yield Unit.of("fuse", i=i, chans=tuple(c[:nb]), h=h, w=w, m=m)


def body_units(body: BodyArch, bpm: int) -> list[Unit]:
    """The units BodyNet runs (stem, trunk, final conv) and the box decoding, in order."""
    h, w = body.input_size
    h4, w4 = body.heatmap_size
    out = [Unit.of("stem", c=body.stem_channels, h=h, w=w)]
    out += _trunk(body.stem_channels, body.net, bpm, h4, w4, 1, False)
    out.append(Unit.of("final", cin=body.net.branch_channels[0], k=KEYPOINTS["body"], h=h4, w=w4, m=1))
    out.append(Unit.of("boxes", h=h4, w=w4))
    return out


def head_units(name: str, head: HeadArch, cin: int, feature_size: tuple[int, int], bpm: int) -> list[Unit]:
    """The units head `name` runs on a feature map of `cin` channels and `feature_size`: its
    RoIAlign crop, trunk and concat-fuse-final, in order."""
    r, m = head.resolution, HEAD_BATCH[name]
    h4, w4 = feature_size
    out = [Unit.of("roi", c=cin, h=h4, w=w4, p=_PARTS[name], r=r)]
    out += _trunk(cin, head.net, bpm, r, r, m, True)
    out.append(Unit.of("head_fuse", chans=tuple(head.net.branch_channels), k=KEYPOINTS[name], r=r, m=m))
    return out


def units_of(arch: Arch, blocks_per_module: tuple[int, int, int]) -> list[tuple[str, Unit]]:
    """(net, unit) for every unit `arch` runs, in forward order; net is body, face or hand."""
    out = [("body", u) for u in body_units(arch.body, blocks_per_module[0])]
    for i, name in enumerate(HEADS):
        head = arch.head(name)
        cin = arch.body.feature_channels(head.feature_stage)
        out += [(name, u) for u in head_units(name, head, cin, arch.body.heatmap_size, blocks_per_module[1 + i])]
    return out


# --- every unit of a space --------------------------------------------------------------------
def _values(space: SearchSpace, name: str) -> list[int]:
    return sorted({int(v) for v in space.choices_for(name)})


def _groups(space: SearchSpace, net: str, field: str, channels: int) -> list[int]:
    return sorted({int(v) for v in space.choices_for(f"{net}.{field}.groups", {f"{net}.{field}.channels": channels})})


def _trunk_units(space: SearchSpace, net: str, inputs: Iterable[tuple[int, int, int]], m: int,
                 multi_scale_last: bool, bpm: int) -> set[Unit]:
    """Every trunk unit of `net` on inputs (cin, h, w)."""
    units: set[Unit] = set()
    widths = _values(space, f"{net}.stage1.channels")
    depth1 = max(_values(space, f"{net}.stage1.depth"))
    last_modules = max(_values(space, f"{net}.stage4.depth")) // bpm
    chans = [_values(space, f"{net}.branch{b + 1}.channels") for b in range(4)]
    for cin, h, w in inputs:
        for width in widths:
            for g in _groups(space, net, "stage1", width):
                units.add(Unit.of("bottleneck", cin=cin, c=width, g=g, down=1, h=h, w=w, m=m))
    spatial = {(h, w) for _, h, w in inputs}
    for h, w in spatial:
        sizes = _branch_sizes(h, w)
        for width in widths:
            if depth1 > 1:
                for g in _groups(space, net, "stage1", width):
                    units.add(Unit.of("bottleneck", cin=4 * width, c=width, g=g, down=0, h=h, w=w, m=m))
            for c1, c2 in itertools.product(chans[0], chans[1]):
                units.add(Unit.of("transition1", cin=4 * width, c1=c1, c2=c2, h=h, w=w, m=m))
        for s in (2, 3):
            hs, ws = sizes[s - 1]
            for a, b in itertools.product(chans[s - 1], chans[s]):
                units.add(Unit.of("transition", cin=a, cout=b, h=hs, w=ws, m=m))
        for b in range(4):
            hb, wb = sizes[b]
            for c in chans[b]:
                for g in _groups(space, net, f"branch{b + 1}", c):
                    units.add(Unit.of("basic", c=c, g=g, h=hb, w=wb, m=m))
        for s in (1, 2, 3):
            nb = s + 1
            outputs = nb if (s < 3 or multi_scale_last or last_modules > 1) else 1
            for combo in itertools.product(*chans[:nb]):
                for i in range(outputs):
                    units.add(Unit.of("fuse", i=i, chans=tuple(combo), h=h, w=w, m=m))
    return units


def space_units(space: SearchSpace) -> list[Unit]:
    """Every distinct unit a subnet of `space` can run, sorted (a superset of the union of
    `units_of` over the space's archs: a last body module's extra fused outputs are included
    when a deeper stage 4 needs them)."""
    bpm = space.all_blocks_per_module()
    units: set[Unit] = set()
    body_inputs: list[tuple[int, int, int]] = []
    feature_maps: set[tuple[int, int, int, int]] = set()  # (stage, channels, h, w)
    stems, widths, branch1 = (_values(space, f"body.{k}.channels") for k in ("stem", "stage1", "branch1"))
    for res in _values(space, "body.resolution"):
        h, w = res, res * 3 // 4
        h4, w4 = -(-h // 4), -(-w // 4)
        for c0 in stems:
            units.add(Unit.of("stem", c=c0, h=h, w=w))
            body_inputs.append((c0, h4, w4))
        for c1 in branch1:
            units.add(Unit.of("final", cin=c1, k=KEYPOINTS["body"], h=h4, w=w4, m=1))
        units.add(Unit.of("boxes", h=h4, w=w4))
        for stage in range(5):
            options = {feature_stage_channels(stage, c0, width, c1)
                       for c0, width, c1 in itertools.product(stems, widths, branch1)}
            feature_maps |= {(stage, c, h4, w4) for c in options}
    units |= _trunk_units(space, "body", body_inputs, 1, False, bpm[0])
    for i, name in enumerate(HEADS):
        m = HEAD_BATCH[name]
        stages = set(_values(space, f"{name}.feature_stage"))
        inputs = []
        for r in _values(space, f"{name}.resolution"):
            for stage, c, h4, w4 in feature_maps:
                if stage in stages:
                    units.add(Unit.of("roi", c=c, h=h4, w=w4, p=_PARTS[name], r=r))
                    inputs.append((c, r, r))
            chans = [_values(space, f"{name}.branch{b + 1}.channels") for b in range(4)]
            for combo in itertools.product(*chans):
                units.add(Unit.of("head_fuse", chans=tuple(combo), k=KEYPOINTS[name], r=r, m=m))
        units |= _trunk_units(space, name, sorted(set(inputs)), m, True, bpm[1 + i])
    return sorted(units)
