"""GFLOPs of an architecture for the searchers' budget check and the analytic objective.

Thin wrappers over `nasplat.flops.analytic_gflops` (G multiply-accumulates of conv layers, 2**30)
bound to a space's blocks-per-module, cached per arch: searchers call them for every proposal.
`within_budget` is the one test of GFLOPs per part (an `Evaluation.gflops`) against a budget on
the total and per-part budgets (`search.budget_gflops`).
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


def within_budget(gflops: Mapping[str, float], total: float | None, parts: Mapping[str, float] | None = None) -> bool:
    """Whether `gflops` ("body", "face", "hand", "total", as `gflops_parts` and `Evaluation.gflops`
    give them) is within the budget on the total and each part's budget (None: no limit)."""
    if total is not None and gflops["total"] > total:
        return False
    return all(gflops[part] <= limit for part, limit in (parts or {}).items())


def describe_budget(total: float | None, parts: Mapping[str, float] | None = None) -> str:
    """The budget for a message: "0.1 GFLOPs", "0.1 GFLOPs (body <= 0.06, hand <= 0.03)", or
    without a total "body <= 0.06, hand <= 0.03 GFLOPs"."""
    limits = ", ".join(f"{part} <= {limit}" for part, limit in (parts or {}).items())
    if not limits:
        return f"{total} GFLOPs"
    return f"{total} GFLOPs ({limits})" if total is not None else f"{limits} GFLOPs"
