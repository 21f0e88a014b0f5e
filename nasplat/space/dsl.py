"""The search-space YAML language: parsing and validation at the edge.

A space file has one section per sub-network (`body`, `face`, `hand`). Every searchable value is a
*choice set*, written as

- a YAML list of explicit choices: `[4]`, `[0, 1, 2, 3, 4]`;
- the paper's range notation in a string: `"[256, 384; 32]"` (start, end inclusive; step);
- a mapping: `{from: 256, to: 384, step: 32}`;
- a single number, meaning one choice.

Group numbers may also be `{halvings: N}`: G in {C, C/2, ..., C/2^N} for the chosen channel count C,
keeping whole numbers only. That makes groups a dimension that depends on another.

Everything here turns the YAML into frozen `SpaceSpec` values, or raises one `ConfigError` that
names the file, the key path, the value and what is allowed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from nasplat.errors import ConfigError
from nasplat.files import validate

NetName = Literal["body", "face", "hand"]

_RANGE = re.compile(r"^\s*\[\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)\s*;\s*([-+0-9.eE]+)\s*\]\s*$")
_ROUND = 6  # decimals kept for float choices (RoI expansion), so 1.0 + 3 * 0.1 == 1.3


class _Range(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: float
    end: float
    step: float

    def __init__(self, **data: Any) -> None:
        if "from" in data:
            data["start"] = data.pop("from")
        if "to" in data:
            data["end"] = data.pop("to")
        super().__init__(**data)


class _Halvings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    halvings: int


ChoiceSpec = Union[float, int, str, list[Union[int, float]], dict[str, Any]]


class _StageSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: ChoiceSpec


class _Stage1Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: ChoiceSpec
    channels: ChoiceSpec
    groups: ChoiceSpec


class _BranchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: ChoiceSpec
    groups: ChoiceSpec


class _StemSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: ChoiceSpec


class _NetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: ChoiceSpec
    blocks_per_module: int = 4
    stage1: _Stage1Spec
    stage2: _StageSpec
    stage3: _StageSpec
    stage4: _StageSpec
    branch1: _BranchSpec
    branch2: _BranchSpec
    branch3: _BranchSpec
    branch4: _BranchSpec


class _BodySpec(_NetSpec):
    stem: _StemSpec


class _HeadSpec(_NetSpec):
    feature_stage: ChoiceSpec
    roi_expansion: ChoiceSpec


class _SpaceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    body: _BodySpec
    face: _HeadSpec
    hand: _HeadSpec

    _name_is_simple = field_validator("name")(classmethod(lambda cls, v: check_simple_name(v)))


@dataclass(frozen=True)
class GroupRule:
    """How a branch's group number is chosen: explicit values, or halvings of the channel count."""

    explicit: tuple[int, ...] | None = None
    halvings: int | None = None

    def choices(self, channels: int) -> tuple[int, ...]:
        """Valid group numbers for `channels`, ascending (1 = dense ... C = depthwise)."""
        if self.explicit is not None:
            return tuple(g for g in self.explicit if channels % g == 0)
        assert self.halvings is not None
        out = []
        g = channels
        for _ in range(self.halvings + 1):
            out.append(g)
            if g % 2:
                break
            g //= 2
        return tuple(sorted(set(out)))


@dataclass(frozen=True)
class NetSpec:
    """The validated choices of one sub-network, keyed by flat name suffix (e.g. `stage3.depth`)."""

    name: str
    blocks_per_module: int
    choices: dict[str, tuple[int | float, ...]]  # independent dimensions, in flat order
    groups: dict[str, GroupRule]  # `stage1.groups` / `branchK.groups` -> rule

    def __hash__(self) -> int:  # dict fields: hash the canonical content
        return hash((self.name, self.blocks_per_module, tuple((k, v) for k, v in self.choices.items())))


@dataclass(frozen=True)
class SpaceSpec:
    name: str
    source: str
    body: NetSpec
    face: NetSpec
    hand: NetSpec

    def net(self, name: str) -> NetSpec:
        return {"body": self.body, "face": self.face, "hand": self.hand}[name]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _expand_choices(spec: Any, *, source: str, key: str, integer: bool) -> tuple[int | float, ...]:
    """Turn one choice set into a sorted tuple of values; a value listed twice is an error."""
    values: list[float]
    if isinstance(spec, bool):
        raise ConfigError(f"value {spec!r} is not a number", source=source, key=key)
    if isinstance(spec, (int, float)):
        values = [float(spec)]
    elif isinstance(spec, list):
        if not spec:
            raise ConfigError("empty list of choices; give at least one", source=source, key=key)
        for v in spec:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"choice {v!r} is not a number", source=source, key=key)
        values = [float(v) for v in spec]
        seen: set[float] = set()
        for v in values:
            if round(v, _ROUND) in seen:
                raise ConfigError(f"choice {_fmt(v)} is listed twice; list each choice once", source=source, key=key)
            seen.add(round(v, _ROUND))
    else:
        if isinstance(spec, str):
            m = _RANGE.match(spec)
            if not m:
                raise ConfigError(
                    f"value {spec!r} is not a choice set; write a list, \"[start, end; step]\" or "
                    "{from, to, step}",
                    source=source,
                    key=key,
                )
            start, end, step = (float(g) for g in m.groups())
        elif isinstance(spec, dict):
            try:
                r = _Range(**spec)
            except ValidationError as e:
                raise ConfigError(
                    f"value {spec!r} is not a range; expected keys from, to, step ({_first_msg(e)})",
                    source=source,
                    key=key,
                ) from e
            start, end, step = r.start, r.end, r.step
        else:
            raise ConfigError(f"value {spec!r} is not a choice set", source=source, key=key)
        shown = f"[{_fmt(start)}, {_fmt(end)}; {_fmt(step)}]"
        if step <= 0:
            raise ConfigError(f"range {shown} has a step that is not positive", source=source, key=key)
        if end < start:
            raise ConfigError(f"range {shown} is inverted (end < start)", source=source, key=key)
        count = (end - start) / step
        n = round(count)
        if abs(count - n) > 1e-9 * max(1.0, abs(count)):
            raise ConfigError(
                f"range {shown}: step {_fmt(step)} does not divide {_fmt(end - start)}",
                source=source,
                key=key,
            )
        values = [start + i * step for i in range(n + 1)]
    if integer:
        for v in values:
            if not float(v).is_integer():
                raise ConfigError(f"choice {_fmt(v)} is not a whole number", source=source, key=key)
        ints = sorted({int(round(v)) for v in values})
        return tuple(ints)
    return tuple(sorted({round(v, _ROUND) for v in values}))


def _first_msg(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return f"{loc}: {err['msg']}" if loc else err["msg"]


def _require(ok: bool, msg: str, *, source: str, key: str) -> None:
    if not ok:
        raise ConfigError(msg, source=source, key=key)


def _build_net(name: str, spec: _NetSpec, source: str) -> NetSpec:
    def ints(sub: str, value: Any) -> tuple[int, ...]:
        return _expand_choices(value, source=source, key=f"{name}.{sub}", integer=True)  # type: ignore[return-value]

    bpm = spec.blocks_per_module
    _require(bpm >= 1, f"value {bpm} must be at least 1", source=source, key=f"{name}.blocks_per_module")
    choices: dict[str, tuple[int | float, ...]] = {}
    groups: dict[str, GroupRule] = {}

    res = ints("resolution", spec.resolution)
    for r in res:
        if name == "body":
            _require(
                r % 4 == 0,
                f"resolution {r} gives a width 3H/4 = {r * 3 / 4:g} that is not a whole number of "
                "pixels; use a multiple of 4",
                source=source,
                key="body.resolution",
            )
            _require(
                r >= 44,
                f"resolution {r} is too small for the 4 stages (the 1/32 branch needs H, W >= 32); "
                "use at least 44",
                source=source,
                key="body.resolution",
            )
        else:
            _require(
                r >= 8,
                f"resolution {r} is too small for the 4 stages (the 1/8 branch needs at least 1 "
                "pixel); use at least 8",
                source=source,
                key=f"{name}.resolution",
            )
    choices["resolution"] = res
    if isinstance(spec, _HeadSpec):
        stages = ints("feature_stage", spec.feature_stage)
        for s in stages:
            _require(
                0 <= s <= 4,
                f"feature stage {s} is not one of 0 (stem), 1, 2, 3, 4",
                source=source,
                key=f"{name}.feature_stage",
            )
        choices["feature_stage"] = stages
        exps = _expand_choices(spec.roi_expansion, source=source, key=f"{name}.roi_expansion", integer=False)
        for e in exps:
            _require(
                0.5 <= e <= 4.0,
                f"RoI expansion {e:g} is outside the allowed [0.5, 4.0]",
                source=source,
                key=f"{name}.roi_expansion",
            )
        choices["roi_expansion"] = exps
    if isinstance(spec, _BodySpec):
        stem = ints("stem.channels", spec.stem.channels)
        _require(stem[0] >= 1, f"channels {stem[0]} must be positive", source=source, key="body.stem.channels")
        choices["stem.channels"] = stem

    def group_rule(sub: str, value: Any, channels: tuple[int, ...]) -> GroupRule:
        key = f"{name}.{sub}"
        if isinstance(value, dict) and set(value) == {"halvings"}:
            try:
                h = _Halvings(**value).halvings
            except ValidationError as e:
                raise ConfigError(f"value {value!r}: {_first_msg(e)}", source=source, key=key) from e
            _require(h >= 0, f"halvings {h} must be 0 or more", source=source, key=key)
            return GroupRule(halvings=h)
        explicit = ints(sub, value)
        for g in explicit:
            _require(g >= 1, f"group number {g} must be positive", source=source, key=key)
            for c in channels:
                _require(
                    c % g == 0,
                    f"group number {g} does not divide channels {c}; allowed group numbers divide "
                    f"every channel choice ({', '.join(map(str, channels))})",
                    source=source,
                    key=key,
                )
        return GroupRule(explicit=explicit)

    for s, stage in enumerate((spec.stage1, spec.stage2, spec.stage3, spec.stage4), start=1):
        depth = ints(f"stage{s}.depth", stage.depth)
        for d in depth:
            _require(d >= 1, f"depth {d} must be at least 1", source=source, key=f"{name}.stage{s}.depth")
            if s > 1:
                _require(
                    d % bpm == 0,
                    f"depth {d} is not a whole number of HRNet modules of {bpm} blocks "
                    f"(blocks_per_module); use a multiple of {bpm}",
                    source=source,
                    key=f"{name}.stage{s}.depth",
                )
        choices[f"stage{s}.depth"] = depth
        if s == 1:
            assert isinstance(stage, _Stage1Spec)
            ch = ints("stage1.channels", stage.channels)
            _require(ch[0] >= 1, f"channels {ch[0]} must be positive", source=source, key=f"{name}.stage1.channels")
            choices["stage1.channels"] = ch
            groups["stage1.groups"] = group_rule("stage1.groups", stage.groups, ch)
    for b, branch in enumerate((spec.branch1, spec.branch2, spec.branch3, spec.branch4), start=1):
        ch = ints(f"branch{b}.channels", branch.channels)
        _require(ch[0] >= 1, f"channels {ch[0]} must be positive", source=source, key=f"{name}.branch{b}.channels")
        choices[f"branch{b}.channels"] = ch
        groups[f"branch{b}.groups"] = group_rule(f"branch{b}.groups", branch.groups, ch)
    return NetSpec(name=name, blocks_per_module=bpm, choices=choices, groups=groups)


def parse_space(data: Any, source: str) -> SpaceSpec:
    """Validate a parsed YAML document as a search space. Raises ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("a search space must be a YAML mapping with keys name, body, face, hand", source=source)
    doc = validate(_SpaceFile, data, source)
    return SpaceSpec(
        name=doc.name,
        source=source,
        body=_build_net("body", doc.body, source),
        face=_build_net("face", doc.face, source),
        hand=_build_net("hand", doc.hand, source),
    )


def check_simple_name(name: str) -> str:
    """`name` when it is letters, digits, '_', '-' and '.' only (a space's name is part of file
    and study names); raises ValueError otherwise (a pydantic validator's error)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError("use letters, digits, '_', '-' and '.' only")
    return name


def describe(values: tuple[int | float, ...]) -> str:
    """A short human description of a choice tuple."""
    return "{" + ", ".join(_fmt(float(v)) for v in values) + "}"


def log10_count(counts: list[int]) -> float:
    return sum(math.log10(c) for c in counts)
