"""The image-classification search space: an Once-for-All (OFA) MobileNetV3 space as data.

A subnet is a `MobileNetArch`: an input resolution and, per stage, the blocks it runs (its depth),
each with a depthwise kernel size and an expand ratio. Only active blocks are part of an arch, so
two subnets that run the same layers are the same arch (OFA keeps the settings of skipped blocks
too; here they are not a choice).

Flat names (used by `ClassificationSpace.encode`, searchers and trackers) are `resolution`,
`stage{s}.depth` and, for the active blocks b = 1..depth only, `stage{s}.block{b}.kernel` and
`stage{s}.block{b}.expand` (stages and blocks count from 1).

The YAML schema (`ClassificationSpaceSpec`) is validated once, at the edge, by
`load_classification_space`; every error is one `ConfigError` naming the file and the key path.
Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nasplat.errors import ArchError, ConfigError
from nasplat.files import read_text, read_yaml, validate as validate_schema
from nasplat.space.arch import FlatArch
from nasplat.space.dsl import check_simple_name, describe
from nasplat.space.space import Dimension

__all__ = [
    "ACTIVATIONS",
    "MAX_KERNEL",
    "BlockArch",
    "ClassificationSpace",
    "ClassificationSpaceSpec",
    "MobileNetArch",
    "ResolutionRange",
    "StageSpec",
    "load_classification_space",
    "make_divisible",
    "mid_channels",
    "parse_classification_space",
    "se_channels",
]

ACTIVATIONS = ("relu", "hswish")
MAX_KERNEL = 7  # OFA's largest depthwise kernel; larger kernels were never part of its space
CHANNEL_DIVISOR = 8
SE_REDUCTION = 4


# --- channel arithmetic (OFA's, shared by the model and the FLOPs count) ------------------------
def make_divisible(v: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """`v` rounded to the nearest multiple of `divisor` (at least `divisor`), never more than 10%
    below `v`: the channel rounding of MobileNet and OFA."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def mid_channels(in_channels: int, expand: int) -> int:
    """Hidden (depthwise) width of an MBConv block reading `in_channels` with ratio `expand`."""
    return make_divisible(round(in_channels * expand))


def se_channels(channels: int) -> int:
    """Reduced width of the squeeze-excite on `channels` features (OFA: reduction 4, rounded)."""
    return make_divisible(channels // SE_REDUCTION)


# --- architectures -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockArch:
    """One active MBConv block: depthwise kernel size and expand ratio."""

    kernel: int
    expand: int


_FLAT_KEY = re.compile(r"^stage([1-9][0-9]*)\.(depth|block([1-9][0-9]*)\.(kernel|expand))$")


def _whole(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArchError(f"value {value!r} is not a number", key=key)
    if float(value) != int(value):
        raise ArchError(f"value {value!r} is not a whole number", key=key)
    return int(value)


@dataclass(frozen=True)
class MobileNetArch(FlatArch):
    """One MobileNetV3 subnet. Hashable and comparable; `to_json` / `from_json` round-trip exactly.

    resolution: side of the square input image.
    stages: per stage, its active blocks in order (the stage's depth is their number).
    """

    resolution: int
    stages: tuple[tuple[BlockArch, ...], ...]

    def __post_init__(self) -> None:
        # lists would make the arch unhashable; normalise them rather than fail later in a dict
        object.__setattr__(self, "stages", tuple(tuple(stage) for stage in self.stages))

    @property
    def depths(self) -> tuple[int, ...]:
        """Active blocks per stage."""
        return tuple(len(stage) for stage in self.stages)

    def to_flat(self) -> dict[str, int]:
        """The flat dict of named choices, in dimension order, active blocks only."""
        flat = {"resolution": self.resolution}
        for s, stage in enumerate(self.stages, start=1):
            flat[f"stage{s}.depth"] = len(stage)
            for b, block in enumerate(stage, start=1):
                flat[f"stage{s}.block{b}.kernel"] = block.kernel
                flat[f"stage{s}.block{b}.expand"] = block.expand
        return flat

    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> MobileNetArch:
        """An arch from its flat dict. The stages are `stage1..stageN`, N the number of
        `stage{s}.depth` keys; block keys beyond a stage's depth are ignored (so a dict that sets
        every block of the supernet decodes too). Raises ArchError naming a missing, unknown or
        non-integer key, or a depth below 1."""
        depth_of: dict[int, int] = {}
        blocks: dict[tuple[int, int, str], Any] = {}
        for key, value in flat.items():
            if key == "resolution":
                continue
            m = _FLAT_KEY.match(str(key))
            if m is None:
                raise ArchError("unknown choice; expected resolution, stage{s}.depth or "
                                "stage{s}.block{b}.kernel / .expand", key=str(key))
            stage = int(m.group(1))
            if m.group(2) == "depth":
                depth_of[stage] = _whole(key, value)
            else:
                blocks[(stage, int(m.group(3)), m.group(4))] = value
        if "resolution" not in flat:
            raise ArchError("missing choice resolution", key="resolution")
        resolution = _whole("resolution", flat["resolution"])
        num_stages = len(depth_of)
        for s in range(1, num_stages + 1):
            if s not in depth_of:
                raise ArchError(f"missing choice stage{s}.depth (stages count from 1 without gaps)",
                                key=f"stage{s}.depth")
        extra = sorted({s for s, _, _ in blocks if s > num_stages})
        if extra:
            raise ArchError(f"stage{extra[0]} has blocks but no stage{extra[0]}.depth",
                            key=f"stage{extra[0]}.depth")
        stages = []
        for s in range(1, num_stages + 1):
            depth = depth_of[s]
            if depth < 1:
                raise ArchError(f"depth {depth} must be at least 1", key=f"stage{s}.depth")
            stage = []
            for b in range(1, depth + 1):
                values = {}
                for field in ("kernel", "expand"):
                    key = f"stage{s}.block{b}.{field}"
                    if (s, b, field) not in blocks:
                        raise ArchError(f"missing choice {key} (stage{s} has depth {depth})", key=key)
                    values[field] = _whole(key, blocks[(s, b, field)])
                stage.append(BlockArch(**values))
            stages.append(tuple(stage))
        return cls(resolution=resolution, stages=tuple(stages))



# --- the YAML schema -----------------------------------------------------------------------------
def _check_kernel(k: int) -> int:
    if k % 2 == 0 or not 1 <= k <= MAX_KERNEL:
        raise ValueError(f"a kernel size must be odd and in 1..{MAX_KERNEL} (centre crops of one "
                         f"{MAX_KERNEL}x{MAX_KERNEL} weight)")
    return k


def _check_expand(e: int) -> int:
    if e < 2:
        # OFA's MBConv drops its 1x1 expansion conv at ratio 1, so a supernet that has the conv
        # could not hand its weights to such a subnet
        raise ValueError("an expand ratio must be at least 2")
    return e


def _unique_sorted(values: tuple[int, ...]) -> tuple[int, ...]:
    seen: set[int] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"choice {v} is listed twice; list each choice once")
        seen.add(v)
    return tuple(sorted(values))


Positive = Annotated[int, Field(gt=0)]
Choices = Annotated[tuple[Positive, ...], Field(min_length=1), AfterValidator(_unique_sorted)]


class ResolutionRange(BaseModel):
    """`{min, max, step}`: every resolution min, min + step, ..., max."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: Positive
    max: Positive
    step: Positive

    @model_validator(mode="after")
    def _divides(self) -> ResolutionRange:
        if self.max < self.min:
            raise ValueError(f"max {self.max} is below min {self.min}")
        if (self.max - self.min) % self.step:
            raise ValueError(f"step {self.step} does not divide max - min = {self.max - self.min}")
        return self

    def values(self) -> tuple[int, ...]:
        return tuple(range(self.min, self.max + 1, self.step))


class StageSpec(BaseModel):
    """One elastic stage: output width, stride of its first block, activation, squeeze-excite."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: Positive
    stride: Literal[1, 2]
    activation: Literal["relu", "hswish"]
    se: bool


class ClassificationSpaceSpec(BaseModel):
    """A classification search-space file. Unknown keys are errors. `resolutions` is a list or a
    `{min, max, step}` range, expanded on validation; every choice tuple (`resolutions`, `depths`,
    `kernel_sizes`, `expand_ratios`) is sorted ascending after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    task: Literal["classification"]
    name: str
    description: str | None = None
    resolutions: Choices
    stem_channels: Positive
    first_block_channels: Positive
    stages: Annotated[tuple[StageSpec, ...], Field(min_length=1)]
    depths: Choices
    kernel_sizes: Annotated[tuple[Annotated[int, AfterValidator(_check_kernel)], ...], Field(min_length=1),
                            AfterValidator(_unique_sorted)]
    expand_ratios: Annotated[tuple[Annotated[int, AfterValidator(_check_expand)], ...], Field(min_length=1),
                             AfterValidator(_unique_sorted)]
    final_expand_channels: Positive
    feature_mix_channels: Positive

    _name_is_simple = field_validator("name")(classmethod(lambda cls, v: check_simple_name(v)))

    @field_validator("resolutions", mode="before")
    @classmethod
    def _expand_range(cls, v: Any) -> Any:
        if isinstance(v, list):
            return tuple(v)  # a before-validator hands on Python values: strict mode wants a tuple
        if not isinstance(v, dict):
            return v
        try:
            return ResolutionRange.model_validate(v, strict=True).values()
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            msg = first["msg"].removeprefix("Value error, ")
            raise ValueError(f"not a range {{min, max, step}} ({where + ': ' if where else ''}{msg})") from e


# --- the space -----------------------------------------------------------------------------------
def _block_key(s: int, b: int, field: str) -> str:
    return f"stage{s}.block{b}.{field}"


class ClassificationSpace:
    """An OFA MobileNetV3 search space. Immutable; every method is a pure function of its
    arguments, and all randomness comes from the `numpy.random.Generator` passed in.

    Dimensions are the flat names of `MobileNetArch.to_flat()` for a stage at its largest depth,
    in that order. A block that only some depths run (block b > the smallest depth) depends on
    its stage's depth: `choices_for(name, partial)` gives its choices when the block is active
    for `partial`'s depth and () when it is not.
    """

    task = "classification"
    arch_type = MobileNetArch
    part_gflops = None  # a subnet's GFLOPs depend on the experiment's classes (`Task.gflops`), not the space alone

    def __init__(self, spec: ClassificationSpaceSpec, source: str | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.source = source
        self.resolutions: tuple[int, ...] = spec.resolutions
        self.num_stages = len(spec.stages)
        self.max_depth = max(spec.depths)
        dims = [Dimension("resolution", self.resolutions)]
        for s in range(1, self.num_stages + 1):
            depth_key = f"stage{s}.depth"
            dims.append(Dimension(depth_key, spec.depths))
            for b in range(1, self.max_depth + 1):
                parent = depth_key if b > min(spec.depths) else None
                dims.append(Dimension(_block_key(s, b, "kernel"), spec.kernel_sizes, parent))
                dims.append(Dimension(_block_key(s, b, "expand"), spec.expand_ratios, parent))
        self.dimensions: tuple[Dimension, ...] = tuple(dims)
        self._by_name = {d.name: d for d in dims}

    # --- dimensions --------------------------------------------------------------------------
    def choices_for(self, name: str, partial: Mapping[str, Any] | None = None) -> tuple[int, ...]:
        """Valid choices of dimension `name`; a block that depends on its stage's depth needs that
        depth in `partial` and has no choices, (), when the depth does not run it. Raises
        ArchError for an unknown name or a missing depth."""
        dim = self._by_name.get(name)
        if dim is None:
            raise ArchError(f"unknown dimension {name!r}", key=name)
        if dim.depends_on is None:
            return dim.choices  # type: ignore[return-value]
        if partial is None or dim.depends_on not in partial:
            raise ArchError(f"choices depend on {dim.depends_on}, which is not given", key=name)
        block = int(name.split(".")[1].removeprefix("block"))
        return dim.choices if block <= int(partial[dim.depends_on]) else ()  # type: ignore[return-value]

    def pinned(self, fix: Mapping[str, Any]) -> ClassificationSpace:
        """This space with the dimensions of `fix` pinned. Only an empty `fix` is supported: the
        sampling draws every block from the space's shared choices. Raises ConfigError (key: the
        first flat name) otherwise."""
        if not fix:
            return self
        name = next(iter(fix))
        raise ConfigError(f"search.fix is not supported by the classification space {self.name!r} yet; "
                          "narrow the choices in the space file instead", key=name)

    # --- special archs -----------------------------------------------------------------------
    def max_arch(self) -> MobileNetArch:
        """The largest subnet: largest resolution, depth, kernel and expand ratio everywhere."""
        return self._uniform(max)

    def min_arch(self) -> MobileNetArch:
        """The smallest subnet: smallest resolution, depth, kernel and expand ratio everywhere."""
        return self._uniform(min)

    def _uniform(self, pick: Any) -> MobileNetArch:
        spec = self.spec
        block = BlockArch(kernel=pick(spec.kernel_sizes), expand=pick(spec.expand_ratios))
        stage = (block,) * pick(spec.depths)
        return MobileNetArch(resolution=pick(self.resolutions), stages=(stage,) * self.num_stages)

    # --- sampling and variation (pure functions of their inputs) ------------------------------
    @staticmethod
    def _draw(choices: tuple[int, ...], rng: np.random.Generator) -> int:
        return choices[int(rng.integers(len(choices)))]

    def _draw_block(self, rng: np.random.Generator) -> BlockArch:
        kernel = self._draw(self.spec.kernel_sizes, rng)
        return BlockArch(kernel=kernel, expand=self._draw(self.spec.expand_ratios, rng))

    def sample(self, rng: np.random.Generator) -> MobileNetArch:
        """A uniformly random choice per dimension: resolution, each stage's depth, and kernel and
        expand ratio of each active block (OFA's `sample_active_subnet`)."""
        resolution = self._draw(self.resolutions, rng)
        stages = []
        for _ in range(self.num_stages):
            depth = self._draw(self.spec.depths, rng)
            stages.append(tuple(self._draw_block(rng) for _ in range(depth)))
        return MobileNetArch(resolution=resolution, stages=tuple(stages))

    def mutate(self, arch: MobileNetArch, rng: np.random.Generator, prob: float) -> MobileNetArch:
        """Resample each choice of `arch` with probability `prob` (a value outside the space is
        always resampled); blocks that a grown depth adds are drawn at random. Raises ValueError
        for `prob` outside [0, 1] and ArchError for an arch with the wrong number of stages."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability {prob} is outside [0, 1]")
        self._check_stages(arch)

        def keep_or_draw(value: int, choices: tuple[int, ...]) -> int:
            return self._draw(choices, rng) if rng.random() < prob or value not in choices else value

        resolution = keep_or_draw(arch.resolution, self.resolutions)
        stages = []
        for old in arch.stages:
            depth = keep_or_draw(len(old), self.spec.depths)
            blocks = []
            for b in range(depth):
                if b < len(old):
                    blocks.append(BlockArch(kernel=keep_or_draw(old[b].kernel, self.spec.kernel_sizes),
                                            expand=keep_or_draw(old[b].expand, self.spec.expand_ratios)))
                else:
                    blocks.append(self._draw_block(rng))
            stages.append(tuple(blocks))
        return MobileNetArch(resolution=resolution, stages=tuple(stages))

    def crossover(self, a: MobileNetArch, b: MobileNetArch, rng: np.random.Generator) -> MobileNetArch:
        """Uniform crossover: resolution, each depth and each block's kernel and expand ratio from
        either parent; a block only the deeper parent has comes from it. Raises ArchError for a
        parent with the wrong number of stages."""
        self._check_stages(a)
        self._check_stages(b)

        def either(x: Any, y: Any) -> Any:
            return x if rng.random() < 0.5 else y

        resolution = either(a.resolution, b.resolution)
        stages = []
        for sa, sb in zip(a.stages, b.stages):
            depth = either(len(sa), len(sb))
            blocks = []
            for i in range(depth):
                if i < len(sa) and i < len(sb):
                    blocks.append(BlockArch(kernel=either(sa[i].kernel, sb[i].kernel),
                                            expand=either(sa[i].expand, sb[i].expand)))
                else:
                    blocks.append(sa[i] if i < len(sa) else sb[i])
            stages.append(tuple(blocks))
        return MobileNetArch(resolution=resolution, stages=tuple(stages))

    # --- size ----------------------------------------------------------------------------------
    def log10_size(self) -> float:
        """log10 of the number of distinct architectures (inactive blocks are no choice)."""
        per_block = len(self.spec.kernel_sizes) * len(self.spec.expand_ratios)
        per_stage = sum(per_block**d for d in self.spec.depths)
        return math.log10(len(self.resolutions)) + self.num_stages * math.log10(per_stage)

    # --- encoding and validation -------------------------------------------------------------
    def encode(self, arch: MobileNetArch) -> dict[str, int]:
        """The arch's flat dict of named choices (validated; raises ArchError)."""
        self.validate(arch)
        return arch.to_flat()

    def decode(self, flat: Mapping[str, Any], source: str | None = None) -> MobileNetArch:
        """A validated arch from a flat dict (extra block keys beyond a depth are ignored).
        Raises ArchError naming `source` and the key."""
        try:
            arch = MobileNetArch.from_flat(flat)
        except ArchError as e:
            raise ArchError(e.detail, source=source, key=e.key) from e
        self.validate(arch, source=source)
        return arch

    def _check_stages(self, arch: MobileNetArch, source: str | None = None) -> None:
        if not isinstance(arch, MobileNetArch):
            raise ArchError(f"expected a MobileNetArch, got {type(arch).__name__}", source=source)
        if len(arch.stages) != self.num_stages:
            raise ArchError(f"{len(arch.stages)} stages; space {self.name!r} has {self.num_stages}",
                            source=source, key="stages")

    def validate(self, arch: MobileNetArch, source: str | None = None) -> None:
        """Raise ArchError naming the flat key, the value and the allowed choices of the first
        choice of `arch` outside the space (or the stage count, keyed `stages`)."""
        self._check_stages(arch, source)

        def check(key: str, value: int, choices: tuple[int, ...]) -> None:
            if value not in choices:
                raise ArchError(f"value {value!r} is outside space {self.name!r}; allowed: {describe(choices)}",
                                source=source, key=key)

        check("resolution", arch.resolution, self.resolutions)
        for s, stage in enumerate(arch.stages, start=1):
            check(f"stage{s}.depth", len(stage), self.spec.depths)
            for b, block in enumerate(stage, start=1):
                check(_block_key(s, b, "kernel"), block.kernel, self.spec.kernel_sizes)
                check(_block_key(s, b, "expand"), block.expand, self.spec.expand_ratios)

    def load_arch(self, ref: str) -> MobileNetArch:
        """`max`, `min`, a path to an arch JSON file, or JSON text -> a validated arch (a JSON
        object `{"arch": {...}}` is unwrapped). Raises ArchError naming the file and key."""
        if ref == "max":
            return self.max_arch()
        if ref == "min":
            return self.min_arch()
        source: str | None = None
        if ref.lstrip().startswith("{"):
            text = ref
        else:
            if not Path(ref).is_file():
                raise ArchError("arch file not found (expected max, min, a JSON file or JSON text)", source=ref)
            text = read_text(ref, what="arch JSON file", error=ArchError)
            source = ref
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"not valid JSON ({e.msg} at line {e.lineno})", source=source) from e
        if isinstance(data, dict) and isinstance(data.get("arch"), dict):
            data = data["arch"]
        if not isinstance(data, dict):
            raise ArchError("an arch must be a JSON object of named choices", source=source)
        return self.decode(data, source=source)

    def fingerprint(self) -> str:
        """A stable short hash of the choices and the structure (not of the name, description or
        the file's formatting)."""
        canon = self.spec.model_dump(mode="json", exclude={"name", "description"})
        canon["resolutions"] = list(self.resolutions)
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"ClassificationSpace({self.name!r}, log10_size={self.log10_size():.2f})"


def parse_classification_space(data: Any, source: str) -> ClassificationSpace:
    """A space from parsed YAML. Raises ConfigError naming `source` and the key path."""
    spec = validate_schema(ClassificationSpaceSpec, data, source)
    return ClassificationSpace(spec, source=source)


def load_classification_space(path: str | Path) -> ClassificationSpace:
    """Read and validate a classification search-space YAML file (`yaml.safe_load`). Raises
    ConfigError naming the file and the key path (`stages.2.channels`)."""
    return parse_classification_space(read_yaml(path), str(path))
