"""The search objective of a trained supernet: whole-body AP of a BN-recalibrated subnet.

`WholeBodyFactory(experiment, device)` is picklable, so the search driver can hand it to each
evaluator process (a Ray actor, on any node), where it builds one `WholeBodyObjective`: a
`SubnetEvaluator` that fetches the supernet from the storage root, generates the node's synthetic
data when asked for, and caches the crops once. The experiment travels by value (its space and
recipe included): a node that shares no disk with the driver has no file to re-read.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasplat.config import Experiment
from nasplat.search.evaluation import Evaluation
from nasplat.search.objectives import Objective
from nasplat.space import Arch
from nasplat.subnet.evaluator import SubnetEvaluator


class WholeBodyObjective(Objective):
    """Whole-body AP of a BN-recalibrated subnet of the trained supernet (loads it once).

    Raises TrainingError (no checkpoint) and DataError (no data) on construction."""

    name = "wholebody"

    def __init__(self, experiment: Experiment, device: str = "cpu") -> None:
        self._evaluator = SubnetEvaluator(experiment, device)

    def evaluate(self, arch: Arch) -> Evaluation:
        return Evaluation.from_dict(self._evaluator.evaluate(arch))


@dataclass(frozen=True)
class WholeBodyFactory:
    """Picklable factory of `WholeBodyObjective` (the frozen experiment travels by value)."""

    experiment: Experiment
    device: str = "cpu"

    def __call__(self) -> Objective:
        return WholeBodyObjective(self.experiment, self.device)


__all__ = ["WholeBodyFactory", "WholeBodyObjective"]
