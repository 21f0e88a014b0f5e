"""The elastic MobileNetV3 supernet of the classification task (OFA's `OFAMobileNetV3`).

One full-size weight per layer, sliced to the active subnet (the `nasplat.nn.elastic` pattern):

- an MBConv block's hidden width follows its expand ratio (`mid_channels`): the 1x1 expansion
  conv, the depthwise conv, their BNs and the squeeze-excite are sliced to it;
- the depthwise conv owns one 7x7 weight; smaller kernels are its centre crops passed through
  learnable per-layer transform matrices (OFA's kernel transformation, `ElasticDepthwiseConv2d`);
- a stage runs its first `depth` blocks; the input resolution is whatever the images have.

`MobileNetV3Supernet.extract(arch)` copies a subnet into plain `nn.Conv2d` / `nn.BatchNorm2d` /
`nn.Linear` layers (a `MobileNetV3`) with the layers and bias flags of OFA's extracted subnet, so
its parameter count is OFA's, and its output equals the supernet's for that arch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasplat.errors import ArchError, ConfigError
from nasplat.models.registry import register_model
from nasplat.nn.elastic import ElasticBatchNorm2d, ElasticConv2d
from nasplat.tasks.classification.space import (
    ACTIVATIONS,
    BlockArch,
    ClassificationSpace,
    MobileNetArch,
    mid_channels,
    se_channels,
)

__all__ = [
    "ConvBNAct",
    "ElasticDepthwiseConv2d",
    "ElasticMBConv",
    "ElasticSqueezeExcite",
    "MBConv",
    "MobileNetV3",
    "MobileNetV3Config",
    "MobileNetV3Supernet",
    "SqueezeExcite",
    "mobilenetv3",
]


def _activation(name: str) -> nn.Module:
    # ReLU in place is safe after BN (BN's backward does not need its output); Hardswish's
    # backward needs its input, so it stays out of place
    return nn.ReLU(inplace=True) if name == "relu" else nn.Hardswish()


# --- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class MobileNetV3Config:
    """The supernet's own arguments, stored with checkpoints so a resume rebuilds the same net.
    The defaults are OFA's MobileNetV3-Large w1.0 supernet on ImageNet."""

    stem_channels: int = 16  # the first conv: 3x3, stride 2, 3 -> stem, BN, h-swish
    first_block_channels: int = 16  # the fixed first block: depthwise 3x3 + 1x1 stem -> this, ReLU
    stage_channels: tuple[int, ...] = (24, 40, 80, 112, 160)  # output width of each elastic stage
    stage_strides: tuple[int, ...] = (2, 2, 2, 1, 2)  # stride of each stage's first block
    stage_activations: tuple[str, ...] = ("relu", "relu", "hswish", "hswish", "hswish")
    stage_se: tuple[bool, ...] = (False, True, False, True, True)  # squeeze-excite in the stage's blocks
    max_depth: int = 4  # blocks per stage held by the supernet; a subnet runs the first `depth`
    kernel_sizes: tuple[int, ...] = (3, 5, 7)  # depthwise kernels; the largest is the stored weight
    max_expand: int = 6  # largest expand ratio: every block's hidden width is sized for it
    final_expand_channels: int = 960  # 1x1 conv after the last stage (BN, h-swish)
    feature_mix_channels: int = 1280  # 1x1 conv on the pooled features (no BN, no bias, h-swish)
    num_classes: int = 1000
    dropout: float = 0.1  # before the classifier

    def __post_init__(self) -> None:
        n = len(self.stage_channels)
        for name in ("stage_strides", "stage_activations", "stage_se"):
            if len(getattr(self, name)) != n:
                raise ConfigError(f"{len(getattr(self, name))} entries for {n} stages", key=name)
        if any(a not in ACTIVATIONS for a in self.stage_activations):
            raise ConfigError(f"activations must be among {', '.join(ACTIVATIONS)}", key="stage_activations")
        if not self.kernel_sizes or any(k % 2 == 0 or k < 1 for k in self.kernel_sizes):
            raise ConfigError("kernel sizes must be odd and positive", key="kernel_sizes")
        if tuple(sorted(set(self.kernel_sizes))) != tuple(self.kernel_sizes):
            raise ConfigError("kernel sizes must be distinct and ascending", key="kernel_sizes")
        if self.max_depth < 1 or self.max_expand < 2:
            raise ConfigError("max_depth must be >= 1 and max_expand >= 2", key="max_depth")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} is outside [0, 1)", key="dropout")

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MobileNetV3Config:
        """Inverse of `to_dict`. Raises ConfigError for unknown, missing or malformed fields."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown supernet config field; allowed: {', '.join(sorted(names))}", key=unknown[0])
        missing = sorted(names - set(data))
        if missing:
            raise ConfigError("missing supernet config field", key=missing[0])
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
        except TypeError as e:
            raise ConfigError(f"malformed supernet config: {e}") from e

    @classmethod
    def from_space(cls, space: ClassificationSpace, num_classes: int, dropout: float = 0.1) -> MobileNetV3Config:
        """The supernet that holds every arch of `space`."""
        spec = space.spec
        return cls(
            stem_channels=spec.stem_channels,
            first_block_channels=spec.first_block_channels,
            stage_channels=tuple(s.channels for s in spec.stages),
            stage_strides=tuple(s.stride for s in spec.stages),
            stage_activations=tuple(s.activation for s in spec.stages),
            stage_se=tuple(s.se for s in spec.stages),
            max_depth=max(spec.depths),
            kernel_sizes=tuple(spec.kernel_sizes),
            max_expand=max(spec.expand_ratios),
            final_expand_channels=spec.final_expand_channels,
            feature_mix_channels=spec.feature_mix_channels,
            num_classes=num_classes,
            dropout=dropout,
        )

    def stage_inputs(self) -> tuple[int, ...]:
        """Input width of each stage (the previous stage's output)."""
        return (self.first_block_channels, *self.stage_channels[:-1])


# --- layers shared by the supernet and static subnets --------------------------------------------
class ConvBNAct(nn.Module):
    """conv -> optional BN -> optional activation; the children are plain layers (static net) or
    elastic ones (supernet), the forward is the same."""

    def __init__(self, conv: nn.Module, bn: nn.Module | None, act: nn.Module | None) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.act is None else self.act(x)

    def to_static(self) -> ConvBNAct:
        """Elastic children only: a ConvBNAct of plain layers holding copies of the active weights."""
        return ConvBNAct(
            self.conv.to_static(),  # type: ignore[operator]
            None if self.bn is None else self.bn.to_static(),  # type: ignore[operator]
            None if self.act is None else copy.deepcopy(self.act),
        )


class SqueezeExcite(nn.Module):
    """OFA's squeeze-excite: x * h-sigmoid(expand(relu(reduce(mean over H, W)))); both 1x1 convs
    have a bias."""

    def __init__(self, reduce: nn.Module, expand: nn.Module) -> None:
        super().__init__()
        self.reduce = reduce
        self.relu = nn.ReLU(inplace=True)
        self.expand = expand
        self.gate = nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W]
        s = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        s = self.gate(self.expand(self.relu(self.reduce(s))))  # [B, C, 1, 1], in [0, 1]
        return x * s


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand] -> depthwise kxk -> [squeeze-excite] -> 1x1 project (no
    activation), plus the input when `residual` (stride 1 and as many channels in as out)."""

    def __init__(
        self,
        expand: ConvBNAct | None,
        depthwise: ConvBNAct,
        se: SqueezeExcite | None,
        project: ConvBNAct,
        residual: bool,
    ) -> None:
        super().__init__()
        self.expand = expand
        self.depthwise = depthwise
        self.se = se
        self.project = project
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, in, H, W] -> [B, out, ceil(H / stride), ceil(W / stride)]
        y = x if self.expand is None else self.expand(x)  # [B, mid, H, W]
        y = self.depthwise(y)  # [B, mid, H', W']
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)  # [B, out, H', W']
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


# --- elastic layers ------------------------------------------------------------------------------
class ElasticDepthwiseConv2d(nn.Module):
    """A depthwise conv whose channels and kernel size are elastic (OFA's DynamicSeparableConv2d).

    It owns one [C, 1, K, K] weight, K the largest kernel size. Kernel K uses it as is. A smaller
    kernel k is reached one size at a time, largest first: the centre k x k of the current kernel,
    flattened per channel, goes through a learnable [k*k, k*k] matrix shared by the layer's
    channels (`F.linear`, as OFA, so OFA's trained matrices load unchanged). The matrices start as
    the identity, so at initialisation a small kernel is the centre crop of the large one. Padding
    is k // 2.
    """

    def __init__(self, max_channels: int, kernel_sizes: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        sizes = tuple(sorted(set(kernel_sizes)))
        if not sizes or any(k % 2 == 0 or k < 1 for k in sizes):
            raise ValueError(f"kernel sizes {tuple(kernel_sizes)} must be odd and positive")
        self.max_channels = max_channels
        self.kernel_sizes = sizes
        self.max_kernel = sizes[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_kernel, self.max_kernel))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default; the net re-inits
        # "7to5": the matrix that turns the centre 5x5 of the 7x7 kernel into the 5x5 kernel
        self.transforms = nn.ParameterDict(
            {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for small, big in zip(sizes, sizes[1:])}
        )
        self.channels = max_channels
        self.kernel_size = self.max_kernel

    def set_active(self, channels: int, kernel_size: int) -> None:
        """Select the first `channels` channels and kernel `kernel_size`. Raises ArchError for
        more channels than the weight holds or a kernel size it was not built for."""
        if not 1 <= channels <= self.max_channels:
            raise ArchError(f"depthwise channels {channels} are outside the supernet's range 1..{self.max_channels}")
        if kernel_size not in self.kernel_sizes:
            raise ArchError(f"kernel size {kernel_size} is not one of the supernet's {self.kernel_sizes}")
        self.channels = channels
        self.kernel_size = kernel_size

    def active_weight(self) -> Tensor:
        """The weight the active subnet uses: [channels, 1, k, k]."""
        c = self.channels
        weight = self.weight[:c]  # [c, 1, K, K], a view
        size = self.max_kernel
        for smaller in reversed(self.kernel_sizes[:-1]):
            if smaller < self.kernel_size:
                break
            start = (size - smaller) // 2
            centre = weight[:, 0, start : start + smaller, start : start + smaller]  # [c, s, s]
            flat = centre.reshape(c, smaller * smaller)  # [c, s*s]
            weight = F.linear(flat, self.transforms[f"{size}to{smaller}"]).view(c, 1, smaller, smaller)
            size = smaller
        return weight

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, c, H, W] -> [B, c, ceil(H / stride), ceil(W / stride)]
        k = self.kernel_size
        return F.conv2d(x, self.active_weight(), None, self.stride, k // 2, 1, self.channels)

    def to_static(self) -> nn.Conv2d:
        """A plain depthwise nn.Conv2d holding a copy of the active (transformed) weight."""
        c, k = self.channels, self.kernel_size
        conv = nn.Conv2d(c, c, k, stride=self.stride, padding=k // 2, groups=c, bias=False)
        conv = conv.to(self.weight.device, self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(self.active_weight())
        return conv

    def extra_repr(self) -> str:
        return (f"max {self.max_channels}, k={self.kernel_sizes}, s={self.stride}, "
                f"active {self.channels} k={self.kernel_size}")


class ElasticSqueezeExcite(SqueezeExcite):
    """Squeeze-excite on the first `channels` of `max_channels` features; the reduced width
    follows them (`se_channels(channels)`), as in OFA's DynamicSE."""

    def __init__(self, max_channels: int) -> None:
        reduced = se_channels(max_channels)
        super().__init__(
            ElasticConv2d(max_channels, reduced, 1, bias=True),
            ElasticConv2d(reduced, max_channels, 1, bias=True),
        )

    def set_active(self, channels: int) -> None:
        """Raises ArchError for more channels than the full weights hold."""
        reduced = se_channels(channels)
        self.reduce.set_active(channels, reduced)  # type: ignore[operator]
        self.expand.set_active(reduced, channels)  # type: ignore[operator]

    def to_static(self) -> SqueezeExcite:
        return SqueezeExcite(self.reduce.to_static(), self.expand.to_static())  # type: ignore[operator]


class ElasticMBConv(MBConv):
    """An MBConv block whose kernel size and expand ratio are elastic (OFA's DynamicMBConvLayer
    with fixed input and output widths). Its hidden width is `mid_channels(in, expand)`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        activation: str,
        use_se: bool,
        kernel_sizes: Sequence[int],
        max_expand: int,
    ) -> None:
        mid = mid_channels(in_channels, max_expand)
        super().__init__(
            expand=ConvBNAct(ElasticConv2d(in_channels, mid, 1), ElasticBatchNorm2d(mid), _activation(activation)),
            depthwise=ConvBNAct(
                ElasticDepthwiseConv2d(mid, kernel_sizes, stride), ElasticBatchNorm2d(mid), _activation(activation)
            ),
            se=ElasticSqueezeExcite(mid) if use_se else None,
            project=ConvBNAct(ElasticConv2d(mid, out_channels, 1), ElasticBatchNorm2d(out_channels), None),
            residual=stride == 1 and in_channels == out_channels,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.max_expand = max_expand

    def set_active(self, block: BlockArch) -> None:
        """Run as `block` (kernel size, expand ratio). Raises ArchError for a kernel size or a
        hidden width the full weights do not hold."""
        if not 1 <= block.expand <= self.max_expand:
            raise ArchError(f"expand ratio {block.expand} is outside the supernet's range 1..{self.max_expand}")
        mid = mid_channels(self.in_channels, block.expand)
        assert self.expand is not None  # elastic blocks always expand
        self.depthwise.conv.set_active(mid, block.kernel)  # type: ignore[operator]  # first: checks the kernel
        self.expand.conv.set_active(self.in_channels, mid)  # type: ignore[operator]
        self.expand.bn.set_active(mid)  # type: ignore[union-attr]
        self.depthwise.bn.set_active(mid)  # type: ignore[union-attr]
        if self.se is not None:
            self.se.set_active(mid)  # type: ignore[operator]
        self.project.conv.set_active(mid, self.out_channels)  # type: ignore[operator]

    def to_static(self) -> MBConv:
        """A plain MBConv holding copies of the active weights."""
        assert self.expand is not None
        return MBConv(
            self.expand.to_static(),
            self.depthwise.to_static(),
            None if self.se is None else self.se.to_static(),  # type: ignore[operator]
            self.project.to_static(),
            self.residual,
        )


# --- networks ------------------------------------------------------------------------------------
class _MobileNetV3Base(nn.Module):
    """The forward shared by the supernet and static subnets."""

    first_conv: ConvBNAct
    first_block: MBConv
    final_expand: ConvBNAct
    feature_mix: ConvBNAct
    dropout: nn.Dropout
    classifier: nn.Linear

    def _active_blocks(self) -> Iterator[nn.Module]:
        raise NotImplementedError

    def forward(self, images: Tensor) -> Tensor:
        # images: [B, 3, R, R] -> logits [B, num_classes]
        x = self.first_conv(images)  # [B, stem, R/2, R/2]
        x = self.first_block(x)  # [B, first_block, R/2, R/2]
        for block in self._active_blocks():
            x = block(x)  # [B, stage channels, R/2/strides so far]
        x = self.final_expand(x)  # [B, final_expand, r, r]
        x = x.mean((2, 3), keepdim=True)  # [B, final_expand, 1, 1]
        x = self.feature_mix(x).flatten(1)  # [B, feature_mix]
        return self.classifier(self.dropout(x))  # [B, num_classes]


class MobileNetV3(_MobileNetV3Base):
    """A static MobileNetV3 subnet of plain layers (what `MobileNetV3Supernet.extract` returns):
    `blocks` are the active MBConv blocks of every stage in order; `arch` is the subnet's arch."""

    def __init__(
        self,
        first_conv: ConvBNAct,
        first_block: MBConv,
        blocks: Sequence[MBConv],
        final_expand: ConvBNAct,
        feature_mix: ConvBNAct,
        dropout: float,
        classifier: nn.Linear,
        arch: MobileNetArch,
    ) -> None:
        super().__init__()
        self.first_conv = first_conv
        self.first_block = first_block
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = final_expand
        self.feature_mix = feature_mix
        self.dropout = nn.Dropout(dropout)
        self.classifier = classifier
        self.arch = arch

    def _active_blocks(self) -> Iterator[nn.Module]:
        return iter(self.blocks)


class MobileNetV3Supernet(_MobileNetV3Base):
    """The weight-sharing OFA MobileNetV3 supernet. `set_arch` selects a subnet; `extract` copies
    it out. Before the first `set_arch` every layer runs at its largest size (`arch` is None)."""

    def __init__(self, config: MobileNetV3Config) -> None:
        super().__init__()
        c = config
        self.config = c
        stem, first = c.stem_channels, c.first_block_channels
        self.first_conv = ConvBNAct(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.Hardswish())
        self.first_block = MBConv(
            expand=None,  # expand ratio 1: OFA's MBConv has no expansion conv
            depthwise=ConvBNAct(
                nn.Conv2d(stem, stem, 3, 1, 1, groups=stem, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
            ),
            se=None,
            project=ConvBNAct(nn.Conv2d(stem, first, 1, bias=False), nn.BatchNorm2d(first), None),
            residual=stem == first,
        )
        stages = []
        for cin, cout, stride, act, se in zip(
            c.stage_inputs(), c.stage_channels, c.stage_strides, c.stage_activations, c.stage_se
        ):
            stages.append(nn.ModuleList(
                ElasticMBConv(cin if b == 0 else cout, cout, stride if b == 0 else 1, act, se, c.kernel_sizes,
                              c.max_expand)
                for b in range(c.max_depth)
            ))
        self.stages = nn.ModuleList(stages)
        last = c.stage_channels[-1]
        self.final_expand = ConvBNAct(
            nn.Conv2d(last, c.final_expand_channels, 1, bias=False),
            nn.BatchNorm2d(c.final_expand_channels),
            nn.Hardswish(),
        )
        self.feature_mix = ConvBNAct(
            nn.Conv2d(c.final_expand_channels, c.feature_mix_channels, 1, bias=False), None, nn.Hardswish()
        )
        self.dropout = nn.Dropout(c.dropout)
        self.classifier = nn.Linear(c.feature_mix_channels, c.num_classes)
        self._depths: tuple[int, ...] = (c.max_depth,) * len(c.stage_channels)
        self._arch: MobileNetArch | None = None
        _init_weights(self)

    @property
    def arch(self) -> MobileNetArch | None:
        """The active arch (None until the first `set_arch`)."""
        return self._arch

    def check_arch(self, arch: MobileNetArch) -> None:
        """Raise ArchError, keyed by the flat name, when `arch` does not fit this supernet."""
        c = self.config
        if not isinstance(arch, MobileNetArch):
            raise ArchError(f"expected a MobileNetArch, got {type(arch).__name__}")
        if arch.resolution < 1:
            raise ArchError(f"resolution {arch.resolution} must be positive", key="resolution")
        if len(arch.stages) != len(c.stage_channels):
            raise ArchError(f"{len(arch.stages)} stages; the supernet has {len(c.stage_channels)}", key="stages")
        for s, stage in enumerate(arch.stages, start=1):
            if not 1 <= len(stage) <= c.max_depth:
                raise ArchError(f"depth {len(stage)} is outside the supernet's range 1..{c.max_depth}",
                                key=f"stage{s}.depth")
            for b, block in enumerate(stage, start=1):
                if block.kernel not in c.kernel_sizes:
                    raise ArchError(f"kernel size {block.kernel} is not one of the supernet's {c.kernel_sizes}",
                                    key=f"stage{s}.block{b}.kernel")
                if not 2 <= block.expand <= c.max_expand:
                    raise ArchError(f"expand ratio {block.expand} is outside the supernet's range 2..{c.max_expand}",
                                    key=f"stage{s}.block{b}.expand")

    def set_arch(self, arch: MobileNetArch) -> None:
        """Run as the subnet `arch` from now on. Raises ArchError (keyed by the flat name) when it
        does not fit this supernet; the active arch is then unchanged."""
        self.check_arch(arch)  # all checks first: a failure leaves no layer half set
        for stage, blocks in zip(self.stages, arch.stages):
            for module, block in zip(stage, blocks):
                module.set_active(block)  # type: ignore[operator]
        self._depths = arch.depths
        self._arch = arch

    def _active_blocks(self) -> Iterator[nn.Module]:
        for stage, depth in zip(self.stages, self._depths):
            for b in range(depth):
                yield stage[b]

    def extract(self, arch: MobileNetArch | None = None) -> MobileNetV3:
        """A static copy of subnet `arch` (default: the active one), in this net's train/eval mode.
        Its output equals the supernet's for that arch; the supernet's active arch is left as it
        was. Raises ArchError for an arch that does not fit, or when no arch was ever set."""
        previous = self._arch
        if arch is not None:
            self.set_arch(arch)
        active = self._arch
        if active is None:
            raise ArchError("no active architecture: call set_arch(arch) first")
        try:
            static = MobileNetV3(
                copy.deepcopy(self.first_conv),
                copy.deepcopy(self.first_block),
                [block.to_static() for block in self._active_blocks()],  # type: ignore[operator]
                copy.deepcopy(self.final_expand),
                copy.deepcopy(self.feature_mix),
                self.dropout.p,
                copy.deepcopy(self.classifier),
                arch=active,
            )
        finally:
            if previous is not None:
                self.set_arch(previous)
        return static.train(self.training)


def _init_weights(net: nn.Module) -> None:
    """OFA's initialisation: convs normal(0, sqrt(2 / (k * k * out))) over the full sizes ("he_fout"),
    conv biases 0, BN weight 1 and bias 0, linear normal(0, 0.01) with bias 0. Kernel-transform
    matrices keep their identity."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, ElasticConv2d, ElasticDepthwiseConv2d)):
            k = m.weight.shape[-1]
            fan_out = k * k * m.weight.shape[0]
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


@register_model
def mobilenetv3(
    space: ClassificationSpace, *, seed: int = 0, num_classes: int = 10, dropout: float = 0.1
) -> MobileNetV3Supernet:
    """The OFA MobileNetV3 supernet of `space`, initialised from `seed` (the global torch RNG is
    left untouched) and set to `space.max_arch()`."""
    config = MobileNetV3Config.from_space(space, num_classes, dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MobileNetV3Supernet(config)
    net.set_arch(space.max_arch())
    return net
