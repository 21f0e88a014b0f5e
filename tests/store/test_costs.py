"""Phase costs: each piece is recorded however it ends, a resumed phase adds its pieces up, and
reading creates nothing."""

from __future__ import annotations

import pytest

from nasplat.store.costs import phase_cost, phase_costs, record_piece, total


def test_pieces_add_up_per_phase_in_phase_order(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    assert phase_costs(url, "e") == [] and not (tmp_path / "study.db").exists()
    record_piece(url, "e", "search", started_at="t", wall_s=10.0, cpus=2, gpus=0)
    record_piece(url, "e", "training", started_at="t", wall_s=100.0, cpus=2, gpus=1)
    record_piece(url, "e", "training", started_at="t", wall_s=50.0, cpus=2, gpus=1)  # resumed
    record_piece(url, "other", "training", started_at="t", wall_s=999.0, cpus=8, gpus=8)
    costs = phase_costs(url, "e")
    assert [(c.phase, c.pieces, c.wall_s, c.cpu_s, c.gpu_s) for c in costs] == [
        ("training", 2, 150.0, 300.0, 150.0), ("search", 1, 10.0, 20.0, 0.0)]
    t = total(costs)
    assert t.core_hours == pytest.approx(320.0 / 3600) and t.gpu_hours == pytest.approx(150.0 / 3600)


def test_an_interrupted_piece_is_recorded_and_the_error_kept(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    with pytest.raises(KeyboardInterrupt):
        with phase_cost(url, "e", "search", cpus=4):
            raise KeyboardInterrupt
    (cost,) = phase_costs(url, "e")
    assert cost.phase == "search" and cost.pieces == 1 and cost.cpu_s == pytest.approx(4 * cost.wall_s)
