"""Objectives: what a searcher's proposals are scored with.

An `Objective` turns an `Arch` into an `Evaluation`. This module provides the interface and one
objective:

- `AnalyticObjective`: a cheap, smooth, deterministic stand-in for a trained supernet. Accuracy
  grows with each net's capacity with diminishing returns, each head prefers one feature stage and
  one RoI expansion, and the heads profit from a better BodyNet; cost is the analytic GFLOPs. So it
  has a real accuracy/FLOPs trade-off and an unevenly efficient space, which is what the searcher
  tests and benchmarks need. `work` simulates an evaluation's duration with CPU-bound torch matmuls
  (GIL-free, so parallel evaluators really compete for cores).

The real objective of a trained supernet, `WholeBodyObjective` (BN-recalibrated whole-body AP),
implements this interface in `nasplat.subnet`; the search depends only on the interface.

Objectives are built inside evaluator processes from an `ObjectiveFactory` (a picklable callable).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from nasplat.errors import ConfigError
from nasplat.search.cost import gflops_parts, params_fn
from nasplat.search.evaluation import Evaluation
from nasplat.space import Arch, SearchSpace, load_space

OBJECTIVES = ("analytic", "wholebody")


class Objective(ABC):
    """Scores architectures. `evaluate` may be slow and may raise; it must not mutate `arch`."""

    name: str = "objective"
    arch_type: type = Arch  # the class of the archs it scores (the space's `arch_type`)

    @abstractmethod
    def evaluate(self, arch: Arch) -> Evaluation:
        """Evaluate one architecture. Raises NasplatError (or anything) when it cannot."""


ObjectiveFactory = Callable[[], Objective]

# Preferred feature stage and RoI expansion of each head in the analytic model.
_PREFERRED_STAGE = {"face": 2, "hand": 1}
_PREFERRED_EXPANSION = {"face": 1.2, "hand": 1.3}


def calibrate_work(seconds: float, size: int = 256) -> int:
    """How many `size`x`size` float32 matmuls take about `seconds` on one thread here."""
    import torch

    a = torch.randn(size, size)
    with _one_thread():
        for _ in range(3):  # warm up
            a @ a
        start = time.perf_counter()
        reps = 20
        for _ in range(reps):
            a @ a
        per = (time.perf_counter() - start) / reps
    return max(1, int(round(seconds / per)))


class _one_thread:
    def __enter__(self) -> None:
        import torch

        self._old = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self._old)


def _burn(iterations: int, size: int = 256) -> None:
    import torch

    a = torch.full((size, size), 1.0 / size)
    for _ in range(iterations):
        a = a @ a  # [size, size]; values stay finite (row sums 1)


class AnalyticObjective(Objective):
    """Cheap deterministic accuracy model with the space's analytic GFLOPs as cost.

    work: matmul iterations (see `calibrate_work`) burnt per evaluation to simulate its duration;
        0 for none. Uses the calling process's torch thread setting.
    """

    name = "analytic"

    def __init__(self, space: SearchSpace, work: int = 0) -> None:
        if work < 0:
            raise ConfigError(f"work must be >= 0, got {work}", key="work")
        self.space = space
        self.work = work
        self._gflops = gflops_parts(space)
        self._params = params_fn(space)

    def _capacity(self, flat: dict[str, Any], net: str) -> float:
        """Weighted mean position of each choice of `net` in its range (0 smallest .. 1 largest)."""
        total, weight = 0.0, 0.0
        for d in self.space.dimensions:
            if not d.name.startswith(net + ".") or d.name.endswith(("feature_stage", "roi_expansion")):
                continue
            choices = sorted(self.space.choices_for(d.name, flat))
            if len(choices) < 2:
                continue
            pos = choices.index(flat[d.name]) / (len(choices) - 1)
            if d.depends_on is not None:
                pos, w = 1.0 - pos, 0.5  # fewer groups: denser, more capacity
            elif d.name.endswith("resolution"):
                w = 3.0
            elif d.name.endswith("depth"):
                w = 1.5
            else:
                w = 1.0
            total += w * pos
            weight += w
        return total / weight if weight else 1.0

    @staticmethod
    def _saturate(capacity: float, rate: float) -> float:
        return (1.0 - math.exp(-rate * capacity)) / (1.0 - math.exp(-rate))

    def metrics(self, arch: Arch) -> dict[str, dict[str, float]]:
        """Per-part AP/AR of `arch` (pure; no delay)."""
        flat = arch.to_flat()
        body_q = self._saturate(self._capacity(flat, "body"), 2.5)
        ap = {"body": 0.45 + 0.30 * body_q, "foot": 0.35 + 0.35 * body_q}
        for head, rate in (("face", 3.0), ("hand", 1.5)):
            h = arch.head(head)
            q = self._saturate(self._capacity(flat, head), rate)
            stage_fit = math.exp(-0.5 * ((h.feature_stage - _PREFERRED_STAGE[head]) / 1.5) ** 2)
            roi_fit = math.exp(-0.5 * ((h.roi_expansion - _PREFERRED_EXPANSION[head]) / 0.25) ** 2)
            base = 0.25 if head == "hand" else 0.40
            ap[head] = base + (0.30 + 0.15 * body_q) * q * (0.7 + 0.3 * stage_fit) * (0.8 + 0.2 * roi_fit)
        ap["wholebody"] = 0.45 * ap["body"] + 0.10 * ap["foot"] + 0.20 * ap["face"] + 0.25 * ap["hand"]
        return {p: {"AP": round(v, 6), "AR": round(min(1.0, v + 0.05), 6)} for p, v in ap.items()}

    def evaluate(self, arch: Arch) -> Evaluation:
        if self.work:
            _burn(self.work)
        gflops = dict(self._gflops(arch))
        return Evaluation(metrics=self.metrics(arch), gflops=gflops, params=self._params(arch))


@dataclass(frozen=True)
class AnalyticFactory:
    """Picklable factory of `AnalyticObjective`: the loaded `space` when given (it travels by
    value, for evaluators on nodes that do not see the driver's files), else the file at
    `space_path` read in the evaluator process."""

    space_path: str
    work: int = 0
    space: SearchSpace | None = None

    def __call__(self) -> Objective:
        return AnalyticObjective(self.space if self.space is not None else load_space(self.space_path), work=self.work)
