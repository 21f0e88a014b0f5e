"""The search objective of a trained classification supernet: top-1 accuracy of a subnet on the
validation split after BN recalibration, with its GFLOPs and parameters.

`ClassificationFactory(experiment, device)` is picklable: the search hands it to each evaluator
process (a Ray actor, on any node), where it builds one `ClassificationObjective`. That loads the
supernet once (from the storage root, as ZoomNAS's objective does), writes this node's copy of a
synthetic or digits data set when the experiment generates one, and decodes the calibration and
validation images once.
"""

from __future__ import annotations

from dataclasses import dataclass

from nasplat.config import Experiment
from nasplat.search.evaluation import Evaluation
from nasplat.search.objectives import Objective
from nasplat.subnet.evaluator import latest_checkpoint, load_supernet
from nasplat.tasks.classification.evaluate import ClassificationEvaluator
from nasplat.tasks.classification.flops import analytic_gflops, analytic_params
from nasplat.tasks.classification.space import MobileNetArch

__all__ = ["OBJECTIVE", "ClassificationFactory", "ClassificationObjective"]

OBJECTIVE = "top1"  # the metric the search maximises (`ClassificationTask.objective`)


class ClassificationObjective(Objective):
    """Top-1 / top-5 of a BN-recalibrated subnet of the trained supernet (loaded once).

    Raises TrainingError (no checkpoint, or one of another task) and DataError (no data) on
    construction."""

    name = OBJECTIVE
    arch_type = MobileNetArch

    def __init__(self, experiment: Experiment, device: str = "cpu") -> None:
        from nasplat.tasks.registry import get_task  # the task's own data hook, by name

        task = get_task(experiment.task)
        task.ensure_data(experiment)  # this node's copy (nodes may share no disk)
        net, _ = load_supernet(latest_checkpoint(experiment), device)
        self._classes = net.config.num_classes
        self._space = experiment.space
        self._evaluator = ClassificationEvaluator(experiment, net)

    def evaluate(self, arch: MobileNetArch) -> Evaluation:
        scores = self._evaluator.evaluate(arch)  # {"top1", "top5"}
        return Evaluation(metrics={"": {k: float(v) for k, v in scores.items()}},
                          gflops={"total": analytic_gflops(arch, self._space, self._classes)},
                          params=int(analytic_params(arch, self._space, self._classes)), objective=OBJECTIVE)


@dataclass(frozen=True)
class ClassificationFactory:
    """Picklable factory of `ClassificationObjective` (the frozen experiment travels by value)."""

    experiment: Experiment
    device: str = "cpu"
    name = OBJECTIVE  # the study's objective (`run_search` names a factory it is given by this)

    def __call__(self) -> Objective:
        return ClassificationObjective(self.experiment, self.device)
