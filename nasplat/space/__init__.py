"""Search spaces: architectures as data (`Arch`) and the YAML DSL that defines what is searched."""

from nasplat.space.arch import FLAT_KEYS, Arch, BodyArch, HeadArch, HRNetArch
from nasplat.space.dsl import GroupRule, NetSpec, SpaceSpec, parse_space
from nasplat.space.space import Dimension, SearchSpace, load_space

__all__ = [
    "FLAT_KEYS",
    "Arch",
    "BodyArch",
    "Dimension",
    "GroupRule",
    "HRNetArch",
    "HeadArch",
    "NetSpec",
    "SearchSpace",
    "SpaceSpec",
    "load_space",
    "parse_space",
]
