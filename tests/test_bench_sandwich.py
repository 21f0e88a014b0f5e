"""benchmarks/bench_sandwich.py: the static floor copies run the supernet's convs, and one tiny run
reports every ratio, finite and consistent with the others (no timing is asserted)."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from nasplat.models import build_supernet
from nasplat.nn.elastic import DENSE_GROUPED_BELOW
from nasplat.space import load_space
from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_sandwich")


def _small_grouped(convs: list[tuple[int, int]]) -> int:
    return sum(1 for cin, g in convs if g > 1 and cin // g < DENSE_GROUPED_BELOW)


def test_floor_copy_runs_small_grouped_convs_dense_with_the_supernet_output(bench: ModuleType) -> None:
    space = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
    net = build_supernet(space, seed=0).eval()
    arch = space.min_arch()
    plain = [m for m in net.extract(arch).modules() if isinstance(m, nn.Conv2d)]
    assert _small_grouped([(c.in_channels, c.groups) for c in plain]) > 0  # what the supernet runs dense on CPU
    static = bench.floor_copy(net, arch).eval()
    convs = [m for m in static.modules() if isinstance(m, nn.Conv2d)]
    assert _small_grouped([(c.in_channels, c.groups) for c in convs]) == 0
    assert len(convs) == len(plain)
    net.set_arch(arch)
    x = torch.randn(2, 3, *arch.body.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = net(x), static(x)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a)


def _check_ratios(r: dict, floor: bool) -> None:
    for key in ("R", "F", "Q", "max", "sandwich", "wall_R"):
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["F"] > 1  # the sandwich has more members than the max subnet alone
    assert r["Q"] == pytest.approx(r["R"] / r["F"])
    assert set(r["roles"]) == {"min", "random"}
    for time_share, flop_share in r["roles"].values():
        assert math.isfinite(time_share) and time_share > 0 and 0 < flop_share <= 1
    floor_keys = {"static_max", "static_sandwich", "R_static", "Q_static", "Q_over_Q_static"}
    if not floor:
        assert not floor_keys & set(r)
        return
    for key in floor_keys:
        assert math.isfinite(r[key]) and r[key] > 0, key
    assert r["Q_static"] == pytest.approx(r["R_static"] / r["F"])
    assert r["Q_over_Q_static"] == pytest.approx(r["Q"] / r["Q_static"])


def test_tiny_run_reports_the_floor_and_the_profiled_gap(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.main(["--spaces", "cpu_small", "--batch", "2", "--steps", "1", "--floor-reps", "1", "--profile"])
    assert [name for name, _ in rows] == ["cpu_small"]
    _check_ratios(rows[0][1], floor=True)
    printed = capsys.readouterr().out
    assert "Q_static" in printed and "Q/Q_static" in printed
    lines = printed.splitlines()
    line = lines[next(i for i, ln in enumerate(lines) if "Q = R/F" in ln) + 1]  # the first row of the table
    assert line.startswith("cpu_small")
    assert f"{rows[0][1]['R']:.2f}" in line
    assert "cpu_small: one sandwich step, self CPU: elastic" in printed  # the profiled elastic/static gap


def test_no_floor_leaves_the_floor_out(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench.main(["--spaces", "cpu_small", "--batch", "2", "--steps", "1", "--no-floor"])
    _check_ratios(rows[0][1], floor=False)
    assert "Q_static" not in capsys.readouterr().out
