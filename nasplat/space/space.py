"""`SearchSpace`: the parsed DSL as flat dimensions, with pure sampling, mutation and crossover.

Dimensions are the flat names of `Arch.to_flat()`, in that order. A group dimension depends on the
channel dimension just before it: its valid choices are `choices_for(name, partial)`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nasplat.errors import ArchError, ConfigError
from nasplat.space.arch import FLAT_KEYS, HEADS, NETS, NUM_FEATURE_STAGES, Arch, feature_stage_channels
from nasplat.files import read_text, read_yaml
from nasplat.space.dsl import GroupRule, NetSpec, SpaceSpec, describe, parse_space

Value = int | float


@dataclass(frozen=True)
class Dimension:
    """One searchable choice. `choices` lists every value the dimension can take anywhere in the
    space; for a dimension with `depends_on`, the values valid for a given parent value come from
    `SearchSpace.choices_for`."""

    name: str
    choices: tuple[Value, ...]
    depends_on: str | None = None


def _split(name: str) -> tuple[str, str]:
    net, _, rest = name.partition(".")
    return net, rest


class SearchSpace:
    """A ZoomNAS search space. Immutable; every method is a pure function of its arguments."""

    task = "zoomnas"  # the task whose space this is (`nasplat.tasks`)
    arch_type = Arch  # the class of its archs: `arch_type.from_json` reads a stored one

    def __init__(self, spec: SpaceSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.source = spec.source
        dims: list[Dimension] = []
        for key in FLAT_KEYS:
            net, rest = _split(key)
            ns = spec.net(net)
            if rest in ns.groups:
                parent = f"{net}.{rest.replace('groups', 'channels')}"
                rule = ns.groups[rest]
                union = sorted({g for c in ns.choices[rest.replace("groups", "channels")] for g in rule.choices(c)})
                dims.append(Dimension(key, tuple(union), parent))
            else:
                dims.append(Dimension(key, ns.choices[rest]))
        self.dimensions: tuple[Dimension, ...] = tuple(dims)
        self._by_name = {d.name: d for d in dims}
        for d in dims:
            if d.depends_on is None:
                continue
            net, rest = _split(d.name)
            rule = spec.net(net).groups[rest]
            for c in self._by_name[d.depends_on].choices:
                if not rule.choices(int(c)):
                    raise ConfigError(
                        f"no group number of the rule divides channels {int(c)}",
                        source=spec.source,
                        key=d.name,
                    )

    # --- structure -------------------------------------------------------------------------
    def part_gflops(self, arch: Arch) -> dict[str, float]:
        """GFLOPs of `arch` by part ("body", "face", "hand", "total"; `nasplat.flops`): a ZoomNet's
        depend on the space alone."""
        from nasplat.flops import analytic_gflops

        return analytic_gflops(arch, self.all_blocks_per_module()).as_dict()

    def blocks_per_module(self, net: str) -> int:
        """Blocks per HRNet module in stages 2-4 of `net` ('body', 'face' or 'hand')."""
        return self.spec.net(net).blocks_per_module

    def all_blocks_per_module(self) -> tuple[int, int, int]:
        """Blocks per HRNet module of (body, face, hand), the form `analytic_gflops`,
        `build_static` and `SupernetConfig` take."""
        body, face, hand = (self.blocks_per_module(n) for n in NETS)
        return body, face, hand

    def choices_for(self, name: str, partial: Mapping[str, Value] | None = None) -> tuple[Value, ...]:
        """Valid choices of dimension `name`; a dependent dimension needs its parent in `partial`.
        Raises ArchError for an unknown name or a missing/invalid parent value."""
        dim = self._by_name.get(name)
        if dim is None:
            raise ArchError(f"unknown dimension {name!r}", key=name)
        if dim.depends_on is None:
            return dim.choices
        if partial is None or dim.depends_on not in partial:
            raise ArchError(f"choices depend on {dim.depends_on}, which is not given", key=name)
        net, rest = _split(name)
        return self.spec.net(net).groups[rest].choices(int(partial[dim.depends_on]))

    def _net(self, name: str) -> NetSpec:
        return self.spec.net(name)

    def pinned(self, fix: Mapping[str, Value]) -> SearchSpace:
        """The sub-space whose dimensions named in `fix` (flat name -> value) have that one choice.

        Its dimensions are this space's flat names, so its archs are archs of this space (its
        `validate` accepts them); its `fingerprint()` differs unless every pin was already the only
        choice. A pinned group number keeps only the channel choices it is valid for. An empty
        `fix` gives this space. Raises ConfigError whose key is the flat name: an unknown name, a
        value outside the dimension's choices, or a group number the pinned channels do not allow.
        """
        if not fix:
            return self
        values: dict[str, Value] = {}
        for name, value in fix.items():
            dim = self._by_name.get(name)
            if dim is None:
                raise ConfigError(f"no such dimension in space {self.name!r}; allowed: {', '.join(FLAT_KEYS)}",
                                  key=name)
            choice = _matching(value, dim.choices)
            if choice is None:
                raise ConfigError(f"value {value!r} is not a choice; allowed: {describe(dim.choices)}", key=name)
            values[name] = choice
        nets = {n: (dict(self._net(n).choices), dict(self._net(n).groups)) for n in NETS}
        for name, value in values.items():
            net, rest = _split(name)
            choices, groups = nets[net]
            dim = self._by_name[name]
            if dim.depends_on is None:
                choices[rest] = (value,)
                continue
            parent, parent_rest = dim.depends_on, _split(dim.depends_on)[1]
            allowed = [c for c in self._by_name[parent].choices if value in self.choices_for(name, {parent: c})]
            if parent in values and values[parent] not in allowed:
                raise ConfigError(f"value {value!r} conflicts with the pin {parent} = {values[parent]!r}; "
                                  f"allowed for it: {describe(self.choices_for(name, values))}", key=name)
            groups[rest] = GroupRule(explicit=(int(value),))
            # the channels this group number is valid for (the pinned one, when pinned too)
            choices[parent_rest] = tuple(c for c in choices[parent_rest] if c in allowed)
        spec = replace(self.spec, name=f"{self.name} ({len(values)} pinned)",
                       **{n: replace(self._net(n), choices=c, groups=g) for n, (c, g) in nets.items()})
        return SearchSpace(spec)

    # --- special archs ---------------------------------------------------------------------
    def max_arch(self) -> Arch:
        """The largest subnet: every size at its maximum, dense convolutions (fewest groups),
        the feature stage with the most channels and the largest RoI expansion."""
        return self._extreme(largest=True)

    def min_arch(self) -> Arch:
        """The smallest subnet: every size at its minimum, the most groups (depthwise where
        allowed), the feature stage with the fewest channels and the smallest RoI expansion."""
        return self._extreme(largest=False)

    def _extreme(self, largest: bool) -> Arch:
        flat: dict[str, Value] = {}
        pick = max if largest else min
        for d in self.dimensions:
            if d.name.endswith(".feature_stage"):
                continue
            choices = self.choices_for(d.name, flat)
            if d.depends_on is not None:  # groups: fewer groups = more compute
                flat[d.name] = min(choices) if largest else max(choices)
            else:
                flat[d.name] = pick(choices)
        for head in HEADS:
            key = f"{head}.feature_stage"
            stages = self._by_name[key].choices
            channels = [self._stage_channels(flat, int(s)) for s in stages]
            target = pick(channels)
            flat[key] = next(s for s, c in zip(stages, channels) if c == target)
        return Arch.from_flat({k: flat[k] for k in FLAT_KEYS})

    @staticmethod
    def _stage_channels(flat: Mapping[str, Value], stage: int) -> int:
        return feature_stage_channels(
            stage, int(flat["body.stem.channels"]), int(flat["body.stage1.channels"]), int(flat["body.branch1.channels"])
        )

    def feature_channels_by_stage(self, head: str) -> tuple[int, int, int, int, int]:
        """For feature stages 0..4, the most channels each can hand to `head` (0 for a stage the
        space never lets `head` read)."""
        b = self._net("body").choices
        allowed = {int(s) for s in self._by_name[f"{head}.feature_stage"].choices}
        stem, stage1, branch1 = (int(max(b[k])) for k in ("stem.channels", "stage1.channels", "branch1.channels"))
        most = (feature_stage_channels(k, stem, stage1, branch1) for k in range(NUM_FEATURE_STAGES))
        return tuple(c if k in allowed else 0 for k, c in enumerate(most))  # type: ignore[return-value]

    def max_feature_channels(self, head: str) -> int:
        """The most input channels any allowed feature stage can hand to `head`."""
        return max(self.feature_channels_by_stage(head))

    # --- sampling and variation (pure functions of their inputs) ------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random choice per dimension (groups uniform among those valid for the
        sampled channels)."""
        flat: dict[str, Value] = {}
        for d in self.dimensions:
            choices = self.choices_for(d.name, flat)
            flat[d.name] = choices[int(rng.integers(len(choices)))]
        return Arch.from_flat(flat)

    def mutate(self, arch: Arch, rng: np.random.Generator, prob: float) -> Arch:
        """Resample each dimension with probability `prob`; a group number no longer valid for
        its (mutated) channels is resampled too."""
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mutation probability {prob} is outside [0, 1]")
        old = arch.to_flat()
        flat: dict[str, Value] = {}
        for d in self.dimensions:
            choices = self.choices_for(d.name, flat)
            if rng.random() < prob or old[d.name] not in choices:
                flat[d.name] = choices[int(rng.integers(len(choices)))]
            else:
                flat[d.name] = old[d.name]
        return Arch.from_flat(flat)

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each independent dimension from either parent; a group number is
        inherited from the parent that gave its channels, so the child is always valid."""
        fa, fb = a.to_flat(), b.to_flat()
        flat: dict[str, Value] = {}
        source: dict[str, Mapping[str, Value]] = {}
        for d in self.dimensions:
            if d.depends_on is not None:
                parent = source[d.depends_on]
                flat[d.name] = parent[d.name]
            else:
                parent = fa if rng.random() < 0.5 else fb
                flat[d.name] = parent[d.name]
            source[d.name] = parent
        return Arch.from_flat(flat)

    # --- size ------------------------------------------------------------------------------
    def log10_size(self) -> float:
        """log10 of the number of distinct architectures."""
        total = 0.0
        for d in self.dimensions:
            if d.depends_on is not None:
                continue
            children = [c for c in self.dimensions if c.depends_on == d.name]
            if children:
                net, rest = _split(children[0].name)
                rule = self._net(net).groups[rest]
                total += math.log10(sum(len(rule.choices(int(c))) for c in d.choices))
            else:
                total += math.log10(len(d.choices))
        return total

    # --- encoding and validation -------------------------------------------------------------
    def encode(self, arch: Arch) -> dict[str, Value]:
        """The arch's flat dict of named choices (validated)."""
        self.validate(arch)
        return arch.to_flat()

    def decode(self, flat: Mapping[str, Any], source: str | None = None) -> Arch:
        """An Arch from a flat dict, validated against the space. Raises ArchError."""
        try:
            arch = Arch.from_flat(dict(flat))
        except ArchError as e:
            raise ArchError(e.detail, source=source, key=e.key) from e
        self.validate(arch, source=source)
        return arch

    def validate(self, arch: Arch, source: str | None = None) -> None:
        """Raise ArchError naming the first choice of `arch` that is outside the space."""
        flat = arch.to_flat()
        for d in self.dimensions:
            choices = self.choices_for(d.name, flat)
            value = flat[d.name]
            if isinstance(value, float) and not float(value).is_integer() or d.name.endswith("roi_expansion"):
                ok = any(abs(float(value) - float(c)) < 1e-6 for c in choices)
            else:
                ok = value in choices
            if not ok:
                extra = f" for {d.depends_on} = {flat[d.depends_on]}" if d.depends_on else ""
                raise ArchError(
                    f"value {value!r} is outside space {self.name!r}; allowed{extra}: {describe(choices)}",
                    source=source,
                    key=d.name,
                )

    def load_arch(self, ref: str) -> Arch:
        """`max`, `min`, a path to an arch JSON file, or JSON text -> a validated Arch.
        Raises ArchError naming the file and key for anything else."""
        if ref == "max":
            return self.max_arch()
        if ref == "min":
            return self.min_arch()
        path = Path(ref)
        source: str | None = None
        if not ref.lstrip().startswith("{"):
            if not path.is_file():
                raise ArchError("arch file not found (expected max, min, a JSON file or JSON text)", source=ref)
            text = read_text(path, what="arch JSON file", error=ArchError)
            source = ref
        else:
            text = ref
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"not valid JSON ({e.msg} at line {e.lineno})", source=source) from e
        if isinstance(data, dict) and "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]  # accept the output of `nasplat subnet eval --json`
        if not isinstance(data, dict):
            raise ArchError("an arch must be a JSON object of named choices", source=source)
        return self.decode(data, source=source)

    def fingerprint(self) -> str:
        """A stable short hash of the choices (not of the file's formatting or name)."""
        canon = []
        for d in self.dimensions:
            if d.depends_on is None:
                canon.append([d.name, list(d.choices)])
            else:
                parent = self._by_name[d.depends_on]
                canon.append([d.name, {str(c): list(self.choices_for(d.name, {d.depends_on: c})) for c in parent.choices}])
        canon.append({n: self.blocks_per_module(n) for n in NETS})
        return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, log10_size={self.log10_size():.2f})"


def _matching(value: Any, choices: tuple[Value, ...]) -> Value | None:
    """The choice equal to `value` (a float within 1e-6, as `validate` compares RoI expansions),
    or None; a bool or a non-number matches nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return next((c for c in choices if abs(float(value) - float(c)) < 1e-6), None)


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file. Raises ConfigError naming the file and key."""
    source = str(path)
    return SearchSpace(parse_space(read_yaml(path, mapping=False), source))
