"""The search objective of a trained supernet: whole-body AP of a BN-recalibrated subnet.

`WholeBodyFactory(experiment_path, device)` is picklable, so the search driver can hand it to each
evaluator process (a Ray actor), where it re-reads the experiment and builds one
`WholeBodyObjective`: a `SubnetEvaluator` that loads the supernet and caches the crops once.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasplat.config import Experiment, load_experiment
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
    """Picklable factory of `WholeBodyObjective`; the experiment file is re-read in the process."""

    experiment_path: str
    device: str = "cpu"

    def __call__(self) -> Objective:
        return WholeBodyObjective(load_experiment(self.experiment_path), self.device)


__all__ = ["WholeBodyFactory", "WholeBodyObjective"]
