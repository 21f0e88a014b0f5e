"""GFLOPs of an architecture for the searchers' budget check and the analytic objective.

Thin wrappers over `nasplat.flops.analytic_gflops` (G multiply-accumulates of conv layers, 2**30)
bound to a space's blocks-per-module, cached per arch: searchers call them for every proposal.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping

from nasplat.flops import analytic_gflops, analytic_params
from nasplat.space import Arch, SearchSpace

GflopsFn = Callable[[Arch], Mapping[str, float]]


def gflops_parts(space: SearchSpace) -> GflopsFn:
    """A cached function arch -> {"body", "face", "hand", "total"} GFLOPs for `space`."""
    bpm = space.all_blocks_per_module()

    @functools.lru_cache(maxsize=65536)
    def parts(arch: Arch) -> Mapping[str, float]:
        return analytic_gflops(arch, bpm).as_dict()

    return parts


def params_fn(space: SearchSpace) -> Callable[[Arch], int]:
    """arch -> parameter count of its static subnet."""
    bpm = space.all_blocks_per_module()
    return lambda arch: int(analytic_params(arch, bpm))


def total_gflops_fn(space: SearchSpace) -> Callable[[Arch], float]:
    """arch -> total GFLOPs, cached."""
    parts = gflops_parts(space)
    return lambda arch: float(parts(arch)["total"])
