"""The result of evaluating one architecture, as every objective reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from nasplat.errors import NasplatError
from nasplat.space import Arch

PARTS = ("body", "foot", "face", "hand", "wholebody")
GFLOPS_PARTS = ("body", "face", "hand", "total")


@dataclass(frozen=True)
class Evaluation:
    """Accuracy and cost of one subnet.

    metrics: part -> {"AP": float, "AR": float} for the parts of `PARTS` (at least "wholebody").
    gflops: "body", "face", "hand", "total" (G multiply-accumulates, 2**30, conv + linear).
    params: parameter count of the static subnet.
    """

    metrics: Mapping[str, Mapping[str, float]]
    gflops: Mapping[str, float]
    params: int
    extra: Mapping[str, float] = field(default_factory=dict)

    @property
    def ap(self) -> float:
        """Whole-body AP: the quantity every searcher maximises."""
        return float(self.metrics["wholebody"]["AP"])

    @property
    def total_gflops(self) -> float:
        return float(self.gflops["total"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {p: {k: float(v) for k, v in m.items()} for p, m in self.metrics.items()},
            "gflops": {k: float(v) for k, v in self.gflops.items()},
            "params": int(self.params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evaluation:
        """Build from the dict `SubnetEvaluator.evaluate` returns.

        Raises NasplatError when "metrics.wholebody.AP" or "gflops.total" is missing.
        """
        try:
            metrics = {str(p): {str(k): float(v) for k, v in m.items()} for p, m in data["metrics"].items()}
            gflops = {str(k): float(v) for k, v in data["gflops"].items()}
            params = int(data.get("params", 0))
            metrics["wholebody"]["AP"]
            gflops["total"]
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise NasplatError(f"evaluation result lacks a required entry ({e!r}); got keys {sorted(data)}") from e
        return cls(metrics=metrics, gflops=gflops, params=params)


@dataclass(frozen=True)
class Prediction:
    """What the accuracy predictor (`search.predictor`) said when it picked a trial's arch among
    the candidates proposed for one real evaluation. A prediction, never a measurement: it is
    stored beside the trial's evaluation, never in its place.

    ap, std: the picked arch's predicted whole-body AP and its uncertainty.
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
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        """Raises NasplatError (or an ArchError) for a malformed record."""
        try:
            skipped = tuple((Arch.from_json(c["arch"]), float(c["ap"]), float(c["std"]))
                            for c in data.get("screened_out", ()))
            return cls(float(data["ap"]), float(data["std"]), int(data["fitted_on"]), skipped)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise NasplatError(f"prediction record lacks a required entry ({e!r})") from e
