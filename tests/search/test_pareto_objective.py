from __future__ import annotations

from pathlib import Path

import pytest

from nasplat.search import AnalyticObjective, Evaluation, hypervolume, pareto_indices
from nasplat.space import load_space

SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "cpu_small.yaml"


def test_pareto_indices_keeps_only_non_dominated() -> None:
    pts = [(1.0, 0.5), (2.0, 0.4), (2.0, 0.7), (3.0, 0.7), (0.5, 0.1), (1.0, 0.5)]
    front = pareto_indices(pts)
    assert front == [4, 0, 2]


def test_hypervolume_of_a_staircase() -> None:
    pts = [(1.0, 0.5), (2.0, 0.7)]
    # [1,2) x 0.5 + [2,4) x 0.7
    assert hypervolume(pts, ref_gflops=4.0) == pytest.approx(0.5 + 1.4)
    assert hypervolume(pts + [(3.0, 0.6)], ref_gflops=4.0) == pytest.approx(1.9)
    assert hypervolume([(5.0, 0.9)], ref_gflops=4.0) == 0.0


def test_analytic_objective_has_a_tradeoff_and_is_deterministic() -> None:
    space = load_space(SPACE)
    obj = AnalyticObjective(space)
    lo, hi = obj.evaluate(space.min_arch()), obj.evaluate(space.max_arch())
    assert hi.ap > lo.ap and hi.total_gflops > lo.total_gflops
    assert obj.evaluate(space.max_arch()).to_dict() == hi.to_dict()
    assert set(hi.metrics) == {"body", "foot", "face", "hand", "wholebody"}


def test_evaluation_round_trips_the_subnet_evaluator_dict() -> None:
    data = {"metrics": {"wholebody": {"AP": 0.5, "AR": 0.6}}, "gflops": {"body": 1, "face": 1, "hand": 1, "total": 4}, "params": 7}
    ev = Evaluation.from_dict(data)
    assert ev.ap == 0.5 and ev.total_gflops == 4.0
    assert Evaluation.from_dict(ev.to_dict()) == ev
