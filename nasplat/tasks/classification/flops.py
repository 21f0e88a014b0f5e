"""Multiply-adds and parameters of MobileNetV3 subnets, from the arch alone (no torch, microseconds).

The count follows the papers (OFA, MobileNetV3): multiply-adds of conv and linear layers only;
batch norm, activations, pooling, the squeeze-excite's multiply and the residual adds count zero.
The squeeze-excite's two 1x1 convs run on the pooled 1x1 map. GFLOPs are MACs / 2**30, nasplat's
convention (`nasplat.flops`). Parameters are those of the static subnet
(`MobileNetV3Supernet.extract`): weights, biases and BN weight + bias, no running statistics.

The layers walked here are the ones `nasplat.tasks.classification.model` builds: a test checks both
counts against fvcore and `numel` on extracted subnets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

from nasplat.errors import ArchError
from nasplat.tasks.classification.space import ClassificationSpace, MobileNetArch, mid_channels, se_channels

if TYPE_CHECKING:
    from nasplat.tasks.classification.model import MobileNetV3Config

__all__ = ["GIGA", "analytic_gflops", "analytic_macs", "analytic_params"]

GIGA = 2**30
IMAGENET_CLASSES = 1000  # a space's head when no class count is given, as the papers count

ConfigOrSpace = Union["MobileNetV3Config", ClassificationSpace]


@dataclass(frozen=True)
class _Structure:
    """What the counts need of a config or a space: the fixed widths and each stage's
    (channels, stride, squeeze-excite)."""

    stem: int
    first_block: int
    stages: tuple[tuple[int, int, bool], ...]
    final_expand: int
    feature_mix: int
    num_classes: int


@dataclass(frozen=True)
class _Layer:
    """A conv (kernel k, `groups`) or, with k = 1 on one pixel, a linear layer."""

    cin: int
    cout: int
    k: int
    out_pixels: int
    groups: int = 1
    bias: bool = False
    bn: bool = True

    @property
    def macs(self) -> int:
        return self.out_pixels * self.cout * (self.cin // self.groups) * self.k * self.k

    @property
    def params(self) -> int:
        return self.cout * (self.cin // self.groups) * self.k * self.k + self.cout * (int(self.bias) + 2 * int(self.bn))


def _structure(config_or_space: ConfigOrSpace, num_classes: int | None) -> _Structure:
    if isinstance(config_or_space, ClassificationSpace):
        spec = config_or_space.spec
        return _Structure(
            stem=spec.stem_channels,
            first_block=spec.first_block_channels,
            stages=tuple((s.channels, s.stride, s.se) for s in spec.stages),
            final_expand=spec.final_expand_channels,
            feature_mix=spec.feature_mix_channels,
            num_classes=IMAGENET_CLASSES if num_classes is None else num_classes,
        )
    c = config_or_space  # a MobileNetV3Config (not imported: that would import torch)
    return _Structure(
        stem=c.stem_channels,
        first_block=c.first_block_channels,
        stages=tuple(zip(c.stage_channels, c.stage_strides, c.stage_se)),
        final_expand=c.final_expand_channels,
        feature_mix=c.feature_mix_channels,
        num_classes=c.num_classes if num_classes is None else num_classes,
    )


def _down(size: int, stride: int) -> int:
    return -(-size // stride)  # an odd kernel k with padding k // 2


def _layers(arch: MobileNetArch, net: _Structure) -> list[_Layer]:
    if len(arch.stages) != len(net.stages):
        raise ArchError(f"{len(arch.stages)} stages; the net has {len(net.stages)}", key="stages")
    if arch.resolution < 1:
        raise ArchError(f"resolution {arch.resolution} must be positive", key="resolution")
    size = _down(arch.resolution, 2)
    pixels = size * size
    layers = [
        _Layer(3, net.stem, 3, pixels),  # first conv
        _Layer(net.stem, net.stem, 3, pixels, groups=net.stem),  # first block: depthwise
        _Layer(net.stem, net.first_block, 1, pixels),  # first block: project
    ]
    cin = net.first_block
    for (cout, stride, se), blocks in zip(net.stages, arch.stages):
        for b, block in enumerate(blocks):
            mid = mid_channels(cin, block.expand)
            layers.append(_Layer(cin, mid, 1, size * size))  # expand, at the input size
            size = _down(size, stride if b == 0 else 1)
            pixels = size * size
            layers.append(_Layer(mid, mid, block.kernel, pixels, groups=mid))  # depthwise
            if se:
                reduced = se_channels(mid)
                layers.append(_Layer(mid, reduced, 1, 1, bias=True, bn=False))
                layers.append(_Layer(reduced, mid, 1, 1, bias=True, bn=False))
            layers.append(_Layer(mid, cout, 1, pixels))  # project
            cin = cout
    layers.append(_Layer(cin, net.final_expand, 1, size * size))  # final expand
    layers.append(_Layer(net.final_expand, net.feature_mix, 1, 1, bn=False))  # feature mix, pooled
    layers.append(_Layer(net.feature_mix, net.num_classes, 1, 1, bias=True, bn=False))  # classifier
    return layers


def analytic_macs(arch: MobileNetArch, config_or_space: ConfigOrSpace, num_classes: int | None = None) -> int:
    """Conv + linear multiply-adds of subnet `arch` on one `arch.resolution` image.

    `config_or_space` is a `MobileNetV3Config` (its class count unless `num_classes` is given) or
    a `ClassificationSpace` (1000 classes, ImageNet's, unless given). Raises ArchError for an arch
    with the wrong number of stages or a resolution below 1.
    """
    return sum(layer.macs for layer in _layers(arch, _structure(config_or_space, num_classes)))


def analytic_gflops(arch: MobileNetArch, config_or_space: ConfigOrSpace, num_classes: int | None = None) -> float:
    """`analytic_macs` / 2**30, the papers' GFLOPs. Raises as `analytic_macs`."""
    return analytic_macs(arch, config_or_space, num_classes) / GIGA


def analytic_params(arch: MobileNetArch, config_or_space: ConfigOrSpace, num_classes: int | None = None) -> int:
    """Parameters of the static subnet of `arch` (BN weight and bias count, running statistics do
    not); the arguments and errors are those of `analytic_macs`."""
    return sum(layer.params for layer in _layers(arch, _structure(config_or_space, num_classes)))
