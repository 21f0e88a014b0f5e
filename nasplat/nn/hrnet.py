"""Elastic HRNet pieces: multi-resolution modules with SUM fusion, transitions, and the trunk
(stage 1 of Bottlenecks, stages 2-4 of HRNet modules) shared by BodyNet and the heads.

Every container here runs unchanged on elastic or static children: `*.elastic(...)` builds one
with full-size elastic layers, `set_active(...)` selects a subnet, `to_static()` returns the same
container class holding only the active layers, as plain `nn.Conv2d` / `nn.BatchNorm2d`.

Branch b runs at 1/2^b of the trunk input (rounded up by the stride-2 3x3 convs, as in HRNet).
Fusion resizes to the exact size of the branch it joins: nearest upsampling (`nn.resample.resize`)
for lower-resolution inputs, chains of stride-2 3x3 convs for higher-resolution ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from nasplat.errors import ArchError
from nasplat.nn.blocks import BasicBlock, Bottleneck
from nasplat.nn.elastic import ConvBN
from nasplat.nn.resample import resize
from nasplat.space.arch import HRNetArch

__all__ = ["DepthSequential", "HRModule", "HRNetTrunk", "Transition"]


class DepthSequential(nn.Module):
    """The first `depth` of its layers, applied in order (elastic depth: keep the first D)."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.depth = len(self.layers)

    def set_depth(self, depth: int) -> None:
        """Raises ArchError unless 1 <= depth <= the number of layers."""
        if not 1 <= depth <= len(self.layers):
            raise ArchError(f"depth {depth} is outside the supernet's range 1..{len(self.layers)}")
        self.depth = depth

    def active(self) -> list[nn.Module]:
        return list(self.layers[: self.depth])

    def forward(self, x):  # type: ignore[no-untyped-def]  # a tensor or a list of branch tensors
        for layer in self.layers[: self.depth]:
            x = layer(x)
        return x

    def to_static(self) -> DepthSequential:
        return DepthSequential([layer.to_static() for layer in self.active()])  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"depth={self.depth}"


class HRModule(nn.Module):
    """One HRNet module: `blocks_per_module` BasicBlocks per branch, then SUM fusion.

    fuse[i][j] maps branch j to branch i: identity (i == j), 1x1 conv + BN then nearest upsampling
    (j > i), or i - j stride-2 3x3 conv + BN (ReLU on all but the last) (j < i). Only the first
    `num_outputs` fused branches are computed (1 for the last module of BodyNet).
    """

    def __init__(self, branches: Sequence[nn.Module], fuse: Sequence[Sequence[nn.Module]]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.fuse = nn.ModuleList(nn.ModuleList(row) for row in fuse)
        self.num_outputs = len(self.fuse)

    @classmethod
    def elastic(cls, max_channels: Sequence[int], blocks_per_module: int) -> HRModule:
        nb = len(max_channels)
        branches = [
            nn.Sequential(*(BasicBlock.elastic(c, c) for _ in range(blocks_per_module))) for c in max_channels
        ]
        fuse: list[list[nn.Module]] = []
        for i in range(nb):
            row: list[nn.Module] = []
            for j in range(nb):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(ConvBN.elastic(max_channels[j], max_channels[i], 1, relu=False))
                else:
                    chain = [ConvBN.elastic(max_channels[j], max_channels[j], 3, 2) for _ in range(i - j - 1)]
                    chain.append(ConvBN.elastic(max_channels[j], max_channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*chain))
            fuse.append(row)
        return cls(branches, fuse)

    def set_active(self, channels: Sequence[int], groups: Sequence[int], num_outputs: int) -> None:
        """Raises ArchError for sizes outside the full weights or indivisible groups."""
        nb = len(self.branches)
        for branch, c, g in zip(self.branches, channels, groups):
            for block in branch:
                block.set_active(c, c, g)
        if not 1 <= num_outputs <= len(self.fuse):
            raise ArchError(f"{num_outputs} fused outputs requested of {len(self.fuse)}")
        self.num_outputs = num_outputs
        for i in range(nb):
            for j in range(nb):
                layer = self.fuse[i][j]
                if j > i:
                    layer.set_active(channels[j], channels[i])
                elif j < i:
                    for k, conv in enumerate(layer):
                        conv.set_active(channels[j], channels[i] if k == i - j - 1 else channels[j])

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        # xs[b]: [B, C_b, H_b, W_b] -> the first num_outputs fused branches, same shapes
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        return [self.fused(i, xs) for i in range(self.num_outputs)]

    def fused(self, i: int, xs: list[Tensor]) -> Tensor:
        """Fused output i of the branch outputs xs: ReLU(xs[i] + the others mapped to branch i)."""
        row = self.fuse[i]
        y = xs[i]
        for j, x in enumerate(xs):
            if j == i:
                continue
            z = resize(row[j](x), xs[i].shape[-2:], "nearest") if j > i else row[j](x)
            # the first sum is a new tensor: the later ones and the ReLU go into it in place
            # (add and ReLU keep no input for backward that this overwrites)
            y = y + z if y is xs[i] else y.add_(z)
        return F.relu(y, inplace=y is not xs[i])

    def to_static(self) -> HRModule:
        branches = [nn.Sequential(*(block.to_static() for block in branch)) for branch in self.branches]
        fuse = []
        for i in range(self.num_outputs):
            row: list[nn.Module] = []
            for j, layer in enumerate(self.fuse[i]):
                if j == i:
                    row.append(nn.Identity())
                elif j > i:
                    row.append(layer.to_static())
                else:
                    row.append(nn.Sequential(*(conv.to_static() for conv in layer)))
            fuse.append(row)
        return HRModule(branches, fuse)

    def extra_repr(self) -> str:
        return f"num_outputs={self.num_outputs}"


class Transition(nn.Module):
    """Maps the branches of one stage to the next: output i = layers[i](inputs[sources[i]])."""

    def __init__(self, layers: Sequence[nn.Module], sources: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.sources = tuple(sources)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return [layer(xs[src]) for layer, src in zip(self.layers, self.sources)]

    def to_static(self) -> Transition:
        layers = [layer if isinstance(layer, nn.Identity) else layer.to_static() for layer in self.layers]
        return Transition(layers, self.sources)


class HRNetTrunk(nn.Module):
    """Stage 1 (Bottlenecks) and stages 2-4 (HRNet modules), the part BodyNet and the heads share.

    forward(x) returns (taps, branches): taps[k] is the stage-1 output (k = 0) or branch 1 after
    stage k + 1 (k = 1..3); branches are the outputs of the last module (only branch 1 when the last
    module is single-scale).
    """

    def __init__(self, stage1: DepthSequential, transitions: Sequence[Transition], stages: Sequence[DepthSequential]) -> None:
        super().__init__()
        self.stage1 = stage1
        self.transitions = nn.ModuleList(transitions)
        self.stages = nn.ModuleList(stages)

    @classmethod
    def elastic(cls, max_in: int, net: HRNetArch, blocks_per_module: int) -> HRNetTrunk:
        """Full-size elastic trunk for inputs of up to `max_in` channels and sizes up to `net`."""
        width = net.stage1_channels
        stage1 = DepthSequential(
            [Bottleneck.elastic(max_in if d == 0 else 4 * width, width, downsample=d == 0) for d in range(net.depths[0])]
        )
        c = net.branch_channels
        transitions = [Transition([ConvBN.elastic(4 * width, c[0], 3), ConvBN.elastic(4 * width, c[1], 3, 2)], (0, 0))]
        for nb in (2, 3):
            layers: list[nn.Module] = [nn.Identity() for _ in range(nb)]
            layers.append(ConvBN.elastic(c[nb - 1], c[nb], 3, 2))
            transitions.append(Transition(layers, (*range(nb), nb - 1)))
        stages = []
        for s in (1, 2, 3):
            n_modules = _modules(net.depths[s], blocks_per_module, s)
            stages.append(DepthSequential([HRModule.elastic(c[: s + 1], blocks_per_module) for _ in range(n_modules)]))
        return cls(stage1, transitions, stages)

    def set_active(
        self,
        in_channels: int,
        net: HRNetArch,
        blocks_per_module: int,
        multi_scale_output: bool,
        in_offset: int | None = None,
    ) -> None:
        """Select the subnet `net` on inputs of `in_channels` (read by the first block from input
        columns `in_offset`.. of its weights, see Bottleneck). Raises ArchError when it does not fit."""
        width, g1 = net.stage1_channels, net.stage1_groups
        self.stage1.set_depth(net.depths[0])
        for d, block in enumerate(self.stage1.active()):
            if d == 0:
                block.set_active(in_channels, width, g1, in_offset=in_offset)
            else:
                block.set_active(4 * width, width, g1)
        c, g = net.branch_channels, net.branch_groups
        t1 = self.transitions[0].layers
        t1[0].set_active(4 * width, c[0])
        t1[1].set_active(4 * width, c[1])
        for nb in (2, 3):
            self.transitions[nb - 1].layers[nb].set_active(c[nb - 1], c[nb])
        for s, stage in zip((1, 2, 3), self.stages):
            stage.set_depth(_modules(net.depths[s], blocks_per_module, s))
            active = stage.active()
            for m, module in enumerate(active):
                last = s == 3 and m == len(active) - 1
                module.set_active(c[: s + 1], g[: s + 1], s + 1 if multi_scale_output or not last else 1)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # x: [B, Cin, H, W]; branch b of the outputs: [B, C_b, ceil(H / 2^b), ceil(W / 2^b)]
        y = self.stage1(x)  # [B, 4C, H, W]
        taps = [y]
        xs = [y]
        for transition, stage in zip(self.transitions, self.stages):
            xs = stage(transition(xs))
            taps.append(xs[0])
        return taps, xs

    def to_static(self) -> HRNetTrunk:
        return HRNetTrunk(
            self.stage1.to_static(),
            [t.to_static() for t in self.transitions],
            [stage.to_static() for stage in self.stages],
        )


def _modules(depth: int, blocks_per_module: int, stage_index: int) -> int:
    if depth < blocks_per_module or depth % blocks_per_module:
        raise ArchError(
            f"stage{stage_index + 1}.depth {depth} is not a positive multiple of blocks_per_module {blocks_per_module}"
        )
    return depth // blocks_per_module

