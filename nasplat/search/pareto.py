"""Pareto utilities for (whole-body AP up, GFLOPs down)."""

from __future__ import annotations

from typing import Sequence

Point = tuple[float, float]  # (gflops, ap)


def pareto_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the non-dominated points (lower GFLOPs, higher AP), sorted by GFLOPs.

    A point is dominated when another is no worse in both and better in one; exact duplicates
    keep the first one."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best_ap = float("-inf")
    for i in order:
        if points[i][1] > best_ap:
            front.append(i)
            best_ap = points[i][1]
    return front


def hypervolume(points: Sequence[Point], ref_gflops: float, ref_ap: float = 0.0) -> float:
    """Area dominated by `points` and bounded by the reference (ref_gflops, ref_ap): larger is
    better. Points beyond the reference contribute nothing."""
    inside = [(g, a) for g, a in points if g <= ref_gflops and a >= ref_ap]
    if not inside:
        return 0.0
    front = [inside[i] for i in pareto_indices(inside)]  # increasing gflops, increasing ap
    area = 0.0
    for k, (g, a) in enumerate(front):
        next_g = front[k + 1][0] if k + 1 < len(front) else ref_gflops
        area += (next_g - g) * (a - ref_ap)
    return area
