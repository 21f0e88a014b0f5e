"""Architectures as data: frozen, hashable, JSON-able values.

An `Arch` names one ZoomNet subnet: a BodyNet (HRNet) and two heads (HRNetV2), each with its input
resolution, per-stage depth and per-branch channels and groups, plus each head's connection to the
BodyNet (feature stage and RoI expansion). Nothing here knows the search space; membership is
checked by `nasplat.space.SearchSpace.validate`.

Flat names (used by `SearchSpace.encode`, Optuna and MLflow) are `<net>.<field>`, e.g.
`body.resolution`, `body.stem.channels`, `body.stage1.depth`, `body.stage1.channels`,
`body.stage1.groups`, `body.stage3.depth`, `body.branch2.channels`, `body.branch2.groups`,
`face.feature_stage`, `hand.roi_expansion`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from nasplat.errors import ArchError

NUM_STAGES = 4
NUM_BRANCHES = 4
NETS = ("body", "face", "hand")
HEADS = ("face", "hand")
NUM_FEATURE_STAGES = 5  # the BodyNet outputs a head can read: stem, stage 1, branch 1 after stages 2-4


def feature_stage_channels(stage: int, stem_channels: int, stage1_channels: int, branch1_channels: int) -> int:
    """Channels of BodyNet feature stage `stage`: 0 = the stem output (`stem_channels`), 1 = the
    stage-1 Bottleneck output (4 x `stage1_channels`), 2-4 = branch 1 (`branch1_channels`)."""
    if stage == 0:
        return stem_channels
    if stage == 1:
        return 4 * stage1_channels
    return branch1_channels


@dataclass(frozen=True)
class HRNetArch:
    """The elastic part shared by BodyNet and the heads.

    depths: blocks in stage 1 (Bottlenecks) and, for stages 2-4, BasicBlocks per branch summed
        over the stage's modules (a multiple of the space's blocks-per-module).
    stage1_channels / stage1_groups: Bottleneck width C (output 4C) and the groups of its 3x3 conv.
    branch_channels / branch_groups: C1..C4 and their groups, shared by every stage with that branch.
    """

    depths: tuple[int, int, int, int]
    stage1_channels: int
    stage1_groups: int
    branch_channels: tuple[int, int, int, int]
    branch_groups: tuple[int, int, int, int]

    def flat(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in range(NUM_STAGES):
            out[f"{prefix}.stage{s + 1}.depth"] = self.depths[s]
            if s == 0:
                out[f"{prefix}.stage1.channels"] = self.stage1_channels
                out[f"{prefix}.stage1.groups"] = self.stage1_groups
        for b in range(NUM_BRANCHES):
            out[f"{prefix}.branch{b + 1}.channels"] = self.branch_channels[b]
            out[f"{prefix}.branch{b + 1}.groups"] = self.branch_groups[b]
        return out

    @classmethod
    def from_flat(cls, flat: dict[str, Any], prefix: str) -> HRNetArch:
        return cls(
            depths=tuple(int(flat[f"{prefix}.stage{s + 1}.depth"]) for s in range(NUM_STAGES)),  # type: ignore[arg-type]
            stage1_channels=int(flat[f"{prefix}.stage1.channels"]),
            stage1_groups=int(flat[f"{prefix}.stage1.groups"]),
            branch_channels=tuple(int(flat[f"{prefix}.branch{b + 1}.channels"]) for b in range(NUM_BRANCHES)),  # type: ignore[arg-type]
            branch_groups=tuple(int(flat[f"{prefix}.branch{b + 1}.groups"]) for b in range(NUM_BRANCHES)),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class BodyArch:
    """BodyNet: input height `resolution` (width = 3H/4), a dense stem of `stem_channels`, an HRNet."""

    resolution: int
    stem_channels: int
    net: HRNetArch

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the person crop fed to BodyNet."""
        return self.resolution, self.resolution * 3 // 4

    @property
    def heatmap_size(self) -> tuple[int, int]:
        """(height, width) of BodyNet's heatmaps and feature stages: 1/4 of the input, rounded up."""
        h, w = self.input_size
        return -(-h // 4), -(-w // 4)

    def feature_channels(self, stage: int) -> int:
        """Channels of feature stage `stage` (0 = stem, 1 = Bottleneck output 4C, 2-4 = branch 1)."""
        return feature_stage_channels(stage, self.stem_channels, self.net.stage1_channels, self.net.branch_channels[0])


@dataclass(frozen=True)
class HeadArch:
    """FaceHead or HandHead: RoI features of `feature_stage`, box grown by `roi_expansion`,
    resized to `resolution` x `resolution`, then an HRNetV2 without stem."""

    resolution: int
    feature_stage: int
    roi_expansion: float
    net: HRNetArch


class FlatArch:
    """The JSON form and identity of an arch that is a set of named choices: a subclass gives
    `to_flat()` (flat name -> value) and the classmethod `from_flat(flat)`. Every task's arch is
    one (`Arch` here, `MobileNetArch` of the classification task)."""

    def to_flat(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Any:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_flat(), sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Inverse of `to_json`. Raises ArchError for invalid JSON or a bad flat dict."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"not valid JSON ({e.msg} at line {e.lineno})") from e
        if not isinstance(data, dict):
            raise ArchError("an arch must be a JSON object of named choices")
        return cls.from_flat(data)

    def key(self) -> str:
        """A canonical string identity (sorted flat JSON), used to deduplicate evaluations."""
        return json.dumps(self.to_flat(), sort_keys=True)


@dataclass(frozen=True)
class Arch(FlatArch):
    """One ZoomNet subnet. Hashable and comparable; `to_json` / `from_json` round-trip exactly."""

    body: BodyArch
    face: HeadArch
    hand: HeadArch

    def head(self, name: str) -> HeadArch:
        return self.face if name == "face" else self.hand

    def to_flat(self) -> dict[str, int | float]:
        """The flat dict of named choices, in a stable order."""
        flat: dict[str, int | float] = {
            "body.resolution": self.body.resolution,
            "body.stem.channels": self.body.stem_channels,
        }
        flat.update(self.body.net.flat("body"))
        for name in HEADS:
            head = self.head(name)
            flat[f"{name}.resolution"] = head.resolution
            flat[f"{name}.feature_stage"] = head.feature_stage
            flat[f"{name}.roi_expansion"] = head.roi_expansion
            flat.update(head.net.flat(name))
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> Arch:
        """Build an Arch from its flat dict. Raises ArchError naming a missing or non-numeric key."""
        expected = set(_FLAT_KEYS)
        missing = sorted(expected - set(flat))
        if missing:
            raise ArchError(f"missing choice(s) {', '.join(missing)}", key=missing[0])
        unknown = sorted(set(flat) - expected)
        if unknown:
            raise ArchError(f"unknown choice {unknown[0]!r}", key=unknown[0])
        for key, value in flat.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArchError(f"value {value!r} is not a number", key=key)
            if not key.endswith("roi_expansion") and float(value) != int(value):
                raise ArchError(f"value {value!r} is not a whole number", key=key)
        heads = {
            name: HeadArch(
                resolution=int(flat[f"{name}.resolution"]),
                feature_stage=int(flat[f"{name}.feature_stage"]),
                roi_expansion=round(float(flat[f"{name}.roi_expansion"]), 6),
                net=HRNetArch.from_flat(flat, name),
            )
            for name in HEADS
        }
        body = BodyArch(
            resolution=int(flat["body.resolution"]),
            stem_channels=int(flat["body.stem.channels"]),
            net=HRNetArch.from_flat(flat, "body"),
        )
        return cls(body=body, face=heads["face"], hand=heads["hand"])



def _flat_keys() -> tuple[str, ...]:
    dummy_net = HRNetArch((1, 1, 1, 1), 1, 1, (1, 1, 1, 1), (1, 1, 1, 1))
    dummy_head = HeadArch(1, 0, 1.0, dummy_net)
    return tuple(Arch(BodyArch(4, 1, dummy_net), dummy_head, dummy_head).to_flat())


_FLAT_KEYS = _flat_keys()
FLAT_KEYS: tuple[str, ...] = _FLAT_KEYS
