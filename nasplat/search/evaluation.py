"""The result of evaluating one architecture, as every objective reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nasplat.errors import NasplatError
from nasplat.space import Arch

PARTS = ("body", "foot", "face", "hand", "wholebody")
GFLOPS_PARTS = ("body", "face", "hand", "total")
DEFAULT_OBJECTIVE = "wholebody_AP"  # ZoomNAS's; an evaluation of another task names its own


def score_name(objective: str) -> str:
    """How a line names a score of `objective`: "AP" for ZoomNAS's, else the objective ("top1")."""
    return "AP" if objective == DEFAULT_OBJECTIVE else objective


def flat_name(part: str, metric: str) -> str:
    """A metric's name in the store and MLflow: `<part>_<metric>`, or `<metric>` for the part ""."""
    return f"{part}_{metric}" if part else metric


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and cost of one subnet.

    metrics: part -> {metric: value}. ZoomNAS reports {"AP", "AR"} for the parts of `PARTS` (at
        least "wholebody"); a task whose metrics belong to no part puts them under the part "".
    gflops: the task's cost parts (`Task.cost_parts`), "total" among them; ZoomNAS: "body",
        "face", "hand", "total" (G multiply-accumulates, 2**30, conv + linear).
    params: parameter count of the static subnet.
    objective: the flat name (`flat_metrics`) of the metric the search maximises, the task's
        `Task.objective`: "wholebody_AP" for ZoomNAS, "top1" for classification.
    """

    metrics: Mapping[str, Mapping[str, float]]
    gflops: Mapping[str, float]
    params: int
    extra: Mapping[str, float] = field(default_factory=dict)
    objective: str = DEFAULT_OBJECTIVE

    def flat_metrics(self) -> dict[str, float]:
        """Every metric by its flat name: `<part>_<metric>` ("wholebody_AP"), or `<metric>` for
        the part "" ("top1")."""
        return {flat_name(part, k): float(v) for part, m in self.metrics.items() for k, v in m.items()}

    @property
    def score(self) -> float:
        """The objective's value: the quantity every searcher maximises."""
        return float(self.flat_metrics()[self.objective])

    @property
    def score_name(self) -> str:
        """How a line names the score (`score_name`)."""
        return score_name(self.objective)

    @property
    def ap(self) -> float:
        """ZoomNAS's name for `score` (whole-body AP there)."""
        return self.score

    @property
    def total_gflops(self) -> float:
        return float(self.gflops["total"])

    def side_metrics(self) -> dict[str, float]:
        """The metrics a trial records beside its objective (the store's user attrs): ZoomNAS's
        AP of each part; any other task's every other metric."""
        if self.objective != DEFAULT_OBJECTIVE:
            return {k: v for k, v in self.flat_metrics().items() if k != self.objective}
        return {f"{part}_AP": float(m["AP"]) for part, m in self.metrics.items() if part != "wholebody" and "AP" in m}

    def reported_metrics(self) -> dict[str, float]:
        """The few metrics of a trial's MLflow run: the objective, the side metrics and, for
        ZoomNAS, the whole-body AR."""
        out = {self.objective: self.score, **self.side_metrics()}
        if self.objective == DEFAULT_OBJECTIVE and "AR" in self.metrics.get("wholebody", {}):
            out["wholebody_AR"] = float(self.metrics["wholebody"]["AR"])
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metrics": {p: {k: float(v) for k, v in m.items()} for p, m in self.metrics.items()},
            "gflops": {k: float(v) for k, v in self.gflops.items()},
            "params": int(self.params),
        }
        if self.objective != DEFAULT_OBJECTIVE:  # ZoomNAS's records stay as they were written
            out["objective"] = self.objective
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Build from the dict `to_dict` (or `SubnetEvaluator.evaluate`) returns.

        Raises NasplatError when the objective's metric (for ZoomNAS "metrics.wholebody.AP") or
        "gflops.total" is missing.
        """
        try:
            metrics = {str(p): {str(k): float(v) for k, v in m.items()} for p, m in data["metrics"].items()}
            gflops = {str(k): float(v) for k, v in data["gflops"].items()}
            params = int(data.get("params", 0))
            objective = str(data.get("objective", DEFAULT_OBJECTIVE))
            if objective == DEFAULT_OBJECTIVE:
                metrics["wholebody"]["AP"]
            elif objective not in {flat_name(p, k) for p, m in metrics.items() for k in m}:
                raise KeyError(objective)
            gflops["total"]
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise NasplatError(f"evaluation result lacks a required entry ({e!r}); got keys {sorted(data)}") from e
        return cls(metrics=metrics, gflops=gflops, params=params, objective=objective)


@dataclass(frozen=True)
class Prediction:
    """What the accuracy predictor (`search.predictor`) said when it picked a trial's arch among
    the candidates proposed for one real evaluation. A prediction, never a measurement: it is
    stored beside the trial's evaluation, never in its place.

    ap, std: the picked arch's predicted objective (whole-body AP for ZoomNAS) and its uncertainty.
    fitted_on: how many evaluated archs the predictor was fitted on.
    screened_out: the other candidates, (arch, predicted AP, std) each, not evaluated.
    """

    ap: float
    std: float
    fitted_on: int
    screened_out: tuple[tuple[Arch, float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ap": float(self.ap),
            "std": float(self.std),
            "fitted_on": int(self.fitted_on),
            "screened_out": [{"arch": a.to_json(), "ap": float(m), "std": float(s)} for a, m, s in self.screened_out],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], arch_type: type = Arch) -> Prediction:
        """The record `to_dict` wrote, its archs of `arch_type` (the space's `arch_type`). Raises
        NasplatError (or an ArchError) for a malformed record."""
        try:
            skipped = tuple((arch_type.from_json(c["arch"]), float(c["ap"]), float(c["std"]))
                            for c in data.get("screened_out", ()))
            return cls(float(data["ap"]), float(data["std"]), int(data["fitted_on"]), skipped)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise NasplatError(f"prediction record lacks a required entry ({e!r})") from e
