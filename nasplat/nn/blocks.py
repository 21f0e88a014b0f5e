"""Residual blocks (Bottleneck, BasicBlock) built from elastic ops, with a small registry.

Every block type has the same interface, so one contract test covers them all:
`Block.elastic(max_in, max_width, downsample)`, `set_active(in_channels, width, groups)`,
`out_channels(width)`, `to_static()`. Groups apply to the 3x3 convs only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from nasplat.errors import ArchError
from nasplat.nn.elastic import ConvBN

__all__ = ["BLOCKS", "BasicBlock", "Bottleneck", "register_block"]

BLOCKS: dict[str, type[nn.Module]] = {}


def register_block(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a block type to `BLOCKS` under `name`."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        BLOCKS[name] = cls
        return cls

    return add


@register_block("bottleneck")
class Bottleneck(nn.Module):
    """1x1 (in -> C) -> 3x3 (C -> C, groups) -> 1x1 (C -> 4C), plus an identity or 1x1 shortcut."""

    expansion = 4

    def __init__(self, conv1: ConvBN, conv2: ConvBN, conv3: ConvBN, downsample: ConvBN | None) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2
        self.conv3 = conv3
        self.downsample = downsample

    @classmethod
    def elastic(cls, max_in: int, max_width: int, downsample: bool) -> Bottleneck:
        """Elastic Bottleneck. Without `downsample` the input must have 4 x width channels."""
        out = cls.expansion * max_width
        return cls(
            ConvBN.elastic(max_in, max_width, 1),
            ConvBN.elastic(max_width, max_width, 3),
            ConvBN.elastic(max_width, out, 1, relu=False),
            ConvBN.elastic(max_in, out, 1, relu=False) if downsample else None,
        )

    @classmethod
    def out_channels(cls, width: int) -> int:
        return cls.expansion * width

    def set_active(
        self, in_channels: int, width: int, groups: int, in_offset: int | None = None
    ) -> None:
        """Raises ArchError for sizes outside the full weights, or an identity shortcut whose
        input does not have 4 x width channels. `in_offset`: the 1x1 convs on the input read
        columns [in_offset, in_offset + in_channels) of their full weights instead of the first
        ones (a head whose input may come from one of several feature stages)."""
        out = self.expansion * width
        if self.downsample is None and in_channels != out:
            raise ArchError(f"Bottleneck without shortcut conv needs {out} input channels, got {in_channels}")
        if in_offset is not None and self.downsample is None:
            raise ArchError("an input offset needs the Bottleneck's shortcut conv")
        segments = None if in_offset is None else ((in_offset, in_channels),)
        self.conv1.set_active(in_channels, width, in_segments=segments)
        self.conv2.set_active(width, width, groups)
        self.conv3.set_active(width, out)
        if self.downsample is not None:
            self.downsample.set_active(in_channels, out, in_segments=segments)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, in, H, W] -> [B, 4C, H, W]
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return F.relu(out + residual, inplace=True)

    def to_static(self) -> Bottleneck:
        return Bottleneck(
            self.conv1.to_static(),
            self.conv2.to_static(),
            self.conv3.to_static(),
            None if self.downsample is None else self.downsample.to_static(),
        )


@register_block("basic")
class BasicBlock(nn.Module):
    """3x3 (C -> C, groups) -> 3x3 (C -> C, groups), plus the identity."""

    expansion = 1

    def __init__(self, conv1: ConvBN, conv2: ConvBN) -> None:
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2

    @classmethod
    def elastic(cls, max_in: int, max_width: int, downsample: bool = False) -> BasicBlock:
        """Elastic BasicBlock; HRNet branches never change width inside a block."""
        if downsample or max_in != max_width:
            raise ArchError("a BasicBlock keeps its width: no shortcut conv, input = width")
        return cls(ConvBN.elastic(max_width, max_width, 3), ConvBN.elastic(max_width, max_width, 3, relu=False))

    @classmethod
    def out_channels(cls, width: int) -> int:
        return width

    def set_active(self, in_channels: int, width: int, groups: int) -> None:
        """Raises ArchError when `in_channels` differs from `width` or sizes are out of range."""
        if in_channels != width:
            raise ArchError(f"BasicBlock needs {width} input channels, got {in_channels}")
        self.conv1.set_active(width, width, groups)
        self.conv2.set_active(width, width, groups)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        out = self.conv2(self.conv1(x))
        return F.relu(out + x, inplace=True)

    def to_static(self) -> BasicBlock:
        return BasicBlock(self.conv1.to_static(), self.conv2.to_static())
