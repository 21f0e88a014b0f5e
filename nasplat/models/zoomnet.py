"""ZoomNet: BodyNet (HRNet) + FaceHead and HandHead (HRNetV2 without stem) on RoI features.

`ZoomNetSupernet` holds full-size elastic weights; `set_arch(arch)` makes it run as that subnet and
`extract(arch)` returns a `ZoomNet` of plain layers with copied weights and the same outputs.
Both share one forward (`_ZoomNetBase`), so the static net cannot drift from the supernet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nasplat.errors import ArchError, ConfigError
from nasplat.models.boxes import NUM_PARTS, decode_part_boxes, expand_boxes
from nasplat.models.registry import register_model
from nasplat.models.roi_align import roi_align
from nasplat.nn.elastic import ConvBN, ElasticConv2d
from nasplat.nn.hrnet import HRNetTrunk
from nasplat.nn.resample import resize
from nasplat.space.arch import HEADS, NUM_FEATURE_STAGES, Arch, BodyArch, HeadArch, HRNetArch

__all__ = [
    "BodyNet",
    "HRNetV2Head",
    "HeadsOutput",
    "SupernetConfig",
    "ZoomNet",
    "ZoomNetOutput",
    "ZoomNetSupernet",
    "build_static",
    "build_supernet",
]

FEATURE_STRIDE = 4


class ZoomNetOutput(NamedTuple):
    body_heatmaps: Tensor  # [B, 38, H/4, W/4]
    boxes: Tensor  # [B, 3, 4] face, left hand, right hand; xyxy body-input pixels, after RoI expansion
    face_heatmaps: Tensor  # [B, 68, Rf, Rf]
    hand_heatmaps: Tensor  # [B, 2, 21, Rh, Rh] left, right


class HeadsOutput(NamedTuple):
    boxes: Tensor  # [B, 3, 4] the boxes the heads cropped, after RoI expansion
    face_heatmaps: Tensor  # [B, 68, Rf, Rf]
    hand_heatmaps: Tensor  # [B, 2, 21, Rh, Rh]


class BodyNet(nn.Module):
    """Stem (two 3x3 stride-2 conv + BN + ReLU, C0 channels) -> HRNet trunk -> 1x1 conv to heatmaps.

    forward(images [B, 3, H, W]) -> (heatmaps [B, K, H/4, W/4], five feature stages): stem output
    (C0), stage-1 output (4C), branch 1 after stages 2, 3, 4 (C1). The last module of stage 4
    fuses into branch 1 only.
    """

    def __init__(self, stem1: ConvBN, stem2: ConvBN, trunk: HRNetTrunk, final: nn.Module) -> None:
        super().__init__()
        self.stem1 = stem1
        self.stem2 = stem2
        self.trunk = trunk
        self.final = final

    @classmethod
    def elastic(cls, stem_channels: int, net: HRNetArch, blocks_per_module: int, num_keypoints: int) -> BodyNet:
        return cls(
            ConvBN.elastic(3, stem_channels, 3, 2),
            ConvBN.elastic(stem_channels, stem_channels, 3, 2),
            HRNetTrunk.elastic(stem_channels, net, blocks_per_module),
            ElasticConv2d(net.branch_channels[0], num_keypoints, 1, bias=True),
        )

    def set_active(self, body: BodyArch, blocks_per_module: int) -> None:
        """Raises ArchError when `body` does not fit the full-size weights."""
        c0 = body.stem_channels
        self.stem1.set_active(3, c0)
        self.stem2.set_active(c0, c0)
        self.trunk.set_active(c0, body.net, blocks_per_module, multi_scale_output=False)
        self.final.set_active(body.net.branch_channels[0], self.final.max_out_channels)

    def forward(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        stem = self.stem2(self.stem1(images))  # [B, C0, H/4, W/4]
        taps, branches = self.trunk(stem)
        heatmaps = self.final(branches[0])  # [B, K, H/4, W/4]
        return heatmaps, [stem, *taps]

    def to_static(self) -> BodyNet:
        return BodyNet(self.stem1.to_static(), self.stem2.to_static(), self.trunk.to_static(), self.final.to_static())


class HRNetV2Head(nn.Module):
    """HRNetV2 without stem: trunk on RoI features, branches 2-4 upsampled bilinearly to branch 1,
    concatenated (C1+C2+C3+C4), 1x1 conv + BN + ReLU of the same width, 1x1 conv to K heatmaps.

    The elastic concat conv reads the active channels of each branch from that branch's own
    column range of the full weight, so a branch channel always meets the same weights.
    """

    def __init__(
        self, trunk: HRNetTrunk, fuse: ConvBN, final: nn.Module, max_branch_channels: tuple[int, ...] = ()
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.fuse = fuse
        self.final = final
        self._max_branch_channels = max_branch_channels  # elastic heads only: the full branch widths

    @classmethod
    def elastic(cls, max_in: int, net: HRNetArch, blocks_per_module: int, num_keypoints: int) -> HRNetV2Head:
        width = sum(net.branch_channels)
        return cls(
            HRNetTrunk.elastic(max_in, net, blocks_per_module),
            ConvBN.elastic(width, width, 1),
            ElasticConv2d(width, num_keypoints, 1, bias=True),
            tuple(net.branch_channels),
        )

    def set_active(self, in_channels: int, net: HRNetArch, blocks_per_module: int, in_offset: int | None = None) -> None:
        """Raises ArchError when `net` on `in_channels` inputs (first-layer weight columns from
        `in_offset` on, default 0) does not fit the full-size weights."""
        self.trunk.set_active(in_channels, net, blocks_per_module, multi_scale_output=True, in_offset=in_offset)
        width = sum(net.branch_channels)
        for c, m in zip(net.branch_channels, self._max_branch_channels):
            if c > m:
                raise ArchError(f"branch channels {c} exceed the supernet's {m}")
        if tuple(net.branch_channels) == self._max_branch_channels:
            self.fuse.conv.set_active(width, width)
        else:
            offsets = [0]
            for m in self._max_branch_channels[:-1]:
                offsets.append(offsets[-1] + m)
            self.fuse.conv.set_active(width, width, in_segments=tuple(zip(offsets, net.branch_channels)))
        self.fuse.bn.set_active(width)
        self.final.set_active(width, self.final.max_out_channels)

    def forward(self, x: Tensor) -> Tensor:
        # x: [N, Cin, R, R] -> [N, K, R, R]
        _, branches = self.trunk(x)
        return self.combine(branches)

    def combine(self, branches: list[Tensor]) -> Tensor:
        """The trunk's four branch outputs -> heatmaps [N, K, R, R]: upsample, concat, fuse, final."""
        size = branches[0].shape[-2:]
        ups = [branches[0]] + [resize(b, size, "bilinear") for b in branches[1:]]
        y = self.fuse(torch.cat(ups, dim=1))  # [N, C1+C2+C3+C4, R, R]
        return self.final(y)

    def to_static(self) -> HRNetV2Head:
        return HRNetV2Head(self.trunk.to_static(), self.fuse.to_static(), self.final.to_static())


@dataclass(frozen=True)
class SupernetConfig:
    """Everything needed to rebuild a supernet (stored with checkpoints)."""

    stem_channels: int  # largest BodyNet stem width C0
    body: HRNetArch  # largest BodyNet depths and channels (groups are not a size)
    face: HRNetArch  # largest FaceHead depths and channels
    hand: HRNetArch  # largest HandHead depths and channels
    # Per feature stage 0..4, the most channels it can deliver to the face head (0: a stage the
    # head never reads). The head's first layer keeps one block of input weights per stage, so a
    # weight only ever meets the features of one stage (stem output and stage-1 output are
    # different signals; sharing one weight between them pulls it two ways during training).
    face_in_channels: tuple[int, ...]
    hand_in_channels: tuple[int, ...]  # the same for the hand head
    blocks_per_module: tuple[int, int, int]  # BasicBlocks per HRNet module: body, face, hand
    num_body_keypoints: int = 38  # 17 body + 6 foot + 15 box keypoints
    num_face_keypoints: int = 68
    num_hand_keypoints: int = 21
    sampling_ratio: int = 1  # RoIAlign samples per bin side (1: the pixel centres of DESIGN.md)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupernetConfig:
        """Inverse of `to_dict`. Raises ConfigError on missing or malformed fields."""
        try:
            nets = {k: HRNetArch(**{f: tuple(v) if isinstance(v, list) else v for f, v in data[k].items()}) for k in ("body", *HEADS)}
            rest = {k: v for k, v in data.items() if k not in nets}
            for key in ("blocks_per_module", "face_in_channels", "hand_in_channels"):
                rest[key] = tuple(rest[key])
            config = cls(**nets, **rest)
        except (KeyError, TypeError, AttributeError) as e:
            raise ConfigError(f"malformed supernet config: {e}") from e
        for head in HEADS:
            if len(config.in_channels(head)) != NUM_FEATURE_STAGES:
                raise ConfigError(f"malformed supernet config: {head}_in_channels needs {NUM_FEATURE_STAGES} entries")
        return config

    def bpm(self, net: str) -> int:
        return self.blocks_per_module[("body", *HEADS).index(net)]

    def in_channels(self, head: str) -> tuple[int, ...]:
        """Per feature stage, the input channels the head's first layer holds for it."""
        return self.face_in_channels if head == "face" else self.hand_in_channels

    def in_offset(self, head: str, stage: int) -> int:
        """The first input column of `stage`'s block in the head's first-layer weights."""
        return sum(self.in_channels(head)[:stage])


class _ZoomNetBase(nn.Module):
    """The forward shared by the supernet and its static subnets; `self.arch` drives it."""

    body: BodyNet
    face: HRNetV2Head
    hand: HRNetV2Head
    sampling_ratio: int

    def _active_arch(self) -> Arch:
        raise NotImplementedError

    def forward_body(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """images [B, 3, H, W] at the arch's body input size -> (heatmaps [B, 38, H/4, W/4],
        the five feature stages). Raises ArchError when the image size does not match the arch."""
        arch = self._active_arch()
        if images.dim() != 4 or tuple(images.shape[-2:]) != arch.body.input_size or images.shape[1] != 3:
            raise ArchError(
                f"images are {tuple(images.shape)}, the arch needs [B, 3, {arch.body.input_size[0]}, {arch.body.input_size[1]}]",
                key="body.resolution",
            )
        return self.body(images)

    def forward_heads(
        self, features: list[Tensor], part_boxes: Tensor, input_size: tuple[int, int]
    ) -> HeadsOutput:
        """Run FaceHead and HandHead on RoI features.

        features: the five BodyNet feature stages; part_boxes: [B, 3, 4] xyxy body-input pixels
        before RoI expansion (face, left hand, right hand); input_size: the body input (H, W).
        Both hands go through the one HandHead as a batch of 2B. Raises ArchError when the
        features do not match `input_size`.
        """
        arch = self._active_arch()
        if len(features) != NUM_FEATURE_STAGES:
            raise ArchError(f"expected {NUM_FEATURE_STAGES} feature stages, got {len(features)}")
        expected = (-(-input_size[0] // FEATURE_STRIDE), -(-input_size[1] // FEATURE_STRIDE))
        if tuple(features[0].shape[-2:]) != expected:
            raise ArchError(f"features are {tuple(features[0].shape[-2:])}, input {input_size} needs {expected}")
        b = part_boxes.shape[0]
        face_box = expand_boxes(part_boxes[:, :1], arch.face.roi_expansion)  # [B, 1, 4]
        hand_boxes = expand_boxes(part_boxes[:, 1:NUM_PARTS], arch.hand.roi_expansion)  # [B, 2, 4]
        face_in = roi_align(
            features[arch.face.feature_stage], face_box, arch.face.resolution, FEATURE_STRIDE, self.sampling_ratio
        )  # [B, 1, C, Rf, Rf]
        hand_in = roi_align(
            features[arch.hand.feature_stage], hand_boxes, arch.hand.resolution, FEATURE_STRIDE, self.sampling_ratio
        )  # [B, 2, C, Rh, Rh]
        face = self.face(face_in.flatten(0, 1))  # [B, 68, Rf, Rf]
        hand = self.hand(hand_in.flatten(0, 1)).unflatten(0, (b, 2))  # [B, 2, 21, Rh, Rh]
        return HeadsOutput(torch.cat((face_box, hand_boxes), dim=1), face, hand)

    def forward(self, images: Tensor, part_boxes: Tensor | None = None) -> ZoomNetOutput:
        """images [B, 3, H, W] at arch.body.input_size; part_boxes [B, 3, 4] (before expansion)
        replace the boxes decoded from the body heatmaps. Raises ArchError on a wrong image size."""
        heatmaps, features = self.forward_body(images)
        # boxes in at least fp32: under autocast the heatmaps are bf16 / fp16, too coarse for pixels
        dtype = torch.promote_types(heatmaps.dtype, torch.float32)
        if part_boxes is None:
            part_boxes = decode_part_boxes(heatmaps.to(dtype), FEATURE_STRIDE)
        heads = self.forward_heads(features, part_boxes.to(dtype), (images.shape[-2], images.shape[-1]))
        return ZoomNetOutput(heatmaps, heads.boxes, heads.face_heatmaps, heads.hand_heatmaps)


class ZoomNet(_ZoomNetBase):
    """A static ZoomNet subnet of plain layers (from `ZoomNetSupernet.extract` or `build_static`)."""

    def __init__(
        self,
        body: BodyNet,
        face: HRNetV2Head,
        hand: HRNetV2Head,
        arch: Arch,
        blocks_per_module: tuple[int, int, int],
        sampling_ratio: int = 1,
    ) -> None:
        super().__init__()
        self.body = body
        self.face = face
        self.hand = hand
        self.arch = arch
        self.blocks_per_module = blocks_per_module
        self.sampling_ratio = sampling_ratio

    def _active_arch(self) -> Arch:
        return self.arch

    def set_arch(self, arch: Arch) -> None:
        """A static subnet is one arch: `arch` must be its own (so code written for the supernet,
        such as the evaluator, runs on it). Raises ArchError for any other arch."""
        if arch != self.arch:
            raise ArchError("a static subnet runs only the arch it was built for")


class ZoomNetSupernet(_ZoomNetBase):
    """The weight-sharing ZoomNet supernet. `set_arch` selects a subnet; `extract` copies it out."""

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__()
        self.config = config
        self.sampling_ratio = config.sampling_ratio
        self.body = BodyNet.elastic(config.stem_channels, config.body, config.bpm("body"), config.num_body_keypoints)
        self.face = HRNetV2Head.elastic(sum(config.face_in_channels), config.face, config.bpm("face"), config.num_face_keypoints)
        self.hand = HRNetV2Head.elastic(sum(config.hand_in_channels), config.hand, config.bpm("hand"), config.num_hand_keypoints)
        self.arch: Arch | None = None

    def _active_arch(self) -> Arch:
        if self.arch is None:
            raise ArchError("no active architecture: call set_arch(arch) first")
        return self.arch

    def set_arch(self, arch: Arch) -> None:
        """Run as the subnet `arch` from now on. Raises ArchError (keyed by the net) when the arch
        does not fit this supernet; the previously active arch then stays active."""
        previous = self.arch
        try:
            self._activate(arch)
        except ArchError:
            if previous is not None:
                self._activate(previous)
            raise
        self.arch = arch

    def _activate(self, arch: Arch) -> None:
        # not `_apply`: nn.Module._apply(fn) is what .to(), .cuda() and .half() run through
        try:
            self.body.set_active(arch.body, self.config.bpm("body"))
        except ArchError as e:
            raise ArchError(e.detail, key="body") from e
        for name in HEADS:
            head: HeadArch = arch.head(name)
            if not 0 <= head.feature_stage < NUM_FEATURE_STAGES:
                raise ArchError(f"feature_stage {head.feature_stage} is not in 0..4", key=f"{name}.feature_stage")
            if head.resolution < 1 or head.roi_expansion <= 0:
                raise ArchError(f"resolution {head.resolution} / roi_expansion {head.roi_expansion} must be positive", key=name)
            channels = arch.body.feature_channels(head.feature_stage)
            held = self.config.in_channels(name)[head.feature_stage]
            if channels > held:
                what = "is not one this supernet was built for" if held == 0 else f"holds at most {held} channels"
                raise ArchError(f"feature_stage {head.feature_stage} ({channels} channels) {what}", key=f"{name}.feature_stage")
            try:
                getattr(self, name).set_active(
                    channels, head.net, self.config.bpm(name), in_offset=self.config.in_offset(name, head.feature_stage)
                )
            except ArchError as e:
                raise ArchError(e.detail, key=name) from e

    def extract(self, arch: Arch | None = None) -> ZoomNet:
        """A static copy of subnet `arch` (default: the active one). Its outputs equal the
        supernet's for that arch. The supernet's active arch is left unchanged. Raises ArchError."""
        previous = self.arch
        if arch is not None:
            self.set_arch(arch)
        active = self._active_arch()
        try:
            static = ZoomNet(
                self.body.to_static(),
                self.face.to_static(),
                self.hand.to_static(),
                active,
                self.config.blocks_per_module,
                self.sampling_ratio,
            )
        finally:
            if previous is not None and previous != active:
                self.set_arch(previous)
        return static.train(self.training)


def _config_from_space(space: Any, sampling_ratio: int) -> SupernetConfig:
    largest = space.max_arch()
    return SupernetConfig(
        stem_channels=largest.body.stem_channels,
        body=largest.body.net,
        face=largest.face.net,
        hand=largest.hand.net,
        face_in_channels=space.feature_channels_by_stage("face"),
        hand_in_channels=space.feature_channels_by_stage("hand"),
        blocks_per_module=space.all_blocks_per_module(),
        sampling_ratio=sampling_ratio,
    )


def build_supernet(space: Any, seed: int | None = None, sampling_ratio: int = 1) -> ZoomNetSupernet:
    """The supernet of a `SearchSpace`, sized by its largest choices, set to `space.max_arch()`.

    `seed` makes the weight initialisation reproducible without touching the global RNG.
    """
    config = _config_from_space(space, sampling_ratio)
    net = _build(config, seed)
    net.set_arch(space.max_arch())
    return net


@register_model
def zoomnet(space: Any, seed: int | None = None, sampling_ratio: int = 1) -> ZoomNetSupernet:
    """ZoomNet: BodyNet (HRNet) + FaceHead / HandHead (HRNetV2), sized by `space` (`build_supernet`)."""
    return build_supernet(space, seed=seed, sampling_ratio=sampling_ratio)


def _build(config: SupernetConfig, seed: int | None) -> ZoomNetSupernet:
    if seed is None:
        return ZoomNetSupernet(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ZoomNetSupernet(config)


def _only_stage(stage: int, channels: int) -> tuple[int, ...]:
    return tuple(channels if k == stage else 0 for k in range(NUM_FEATURE_STAGES))


def config_for_arch(arch: Arch, blocks_per_module: tuple[int, int, int], sampling_ratio: int = 1) -> SupernetConfig:
    """The smallest supernet config that holds `arch` (used to rebuild a static net)."""
    return SupernetConfig(
        stem_channels=arch.body.stem_channels,
        body=arch.body.net,
        face=arch.face.net,
        hand=arch.hand.net,
        face_in_channels=_only_stage(arch.face.feature_stage, arch.body.feature_channels(arch.face.feature_stage)),
        hand_in_channels=_only_stage(arch.hand.feature_stage, arch.body.feature_channels(arch.hand.feature_stage)),
        blocks_per_module=tuple(blocks_per_module),  # type: ignore[arg-type]
        sampling_ratio=sampling_ratio,
    )


def build_static(
    arch: Arch,
    blocks_per_module: tuple[int, int, int] | int,
    seed: int | None = None,
    sampling_ratio: int = 1,
) -> ZoomNet:
    """A freshly initialised static ZoomNet for `arch`, e.g. to load an exported state_dict into.

    `blocks_per_module` is (body, face, hand) or one number for all three. Raises ArchError when
    the depths are not multiples of it or the groups do not divide the channels.
    """
    bpm = (blocks_per_module,) * 3 if isinstance(blocks_per_module, int) else tuple(blocks_per_module)
    net = _build(config_for_arch(arch, bpm, sampling_ratio), seed)  # type: ignore[arg-type]
    net.set_arch(arch)
    return net.extract()
