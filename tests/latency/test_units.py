"""The units an arch runs are what its static subnet runs: their MACs add up to the analytic
count, and every unit of a sampled arch is among the space's profiled units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasplat.flops import analytic_gflops
from nasplat.latency import space_units, units_of
from nasplat.latency.modules import unit_module
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[2]


def _macs(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    total = 0

    def hook(conv: nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        total += conv.weight.numel() * out.shape[-1] * out.shape[-2] * out.shape[0]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module(*inputs)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("space_name", ["quickstart", "cpu_small"])
def test_units_cover_every_sampled_arch(space_name: str) -> None:
    space = load_space(ROOT / "search_spaces" / f"{space_name}.yaml")
    known = set(space_units(space))
    rng = np.random.default_rng(0)
    bpm = space.all_blocks_per_module()
    for _ in range(200):
        for _net, unit in units_of(space.sample(rng), bpm):
            assert unit in known, unit.key


def test_units_run_the_macs_of_the_net() -> None:
    space = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
    bpm = space.all_blocks_per_module()
    rng = np.random.default_rng(1)
    torch.set_num_threads(1)
    for arch in (space.min_arch(), space.max_arch(), space.sample(rng)):
        per_net = {"body": 0, "face": 0, "hand": 0}
        for net, unit in units_of(arch, bpm):
            per_net[net] += _macs(*unit_module(unit, batch=1))
        g = analytic_gflops(arch, bpm)
        assert per_net["body"] == round(g.body * 2**30)
        assert per_net["face"] == round(g.face * 2**30)
        assert per_net["hand"] == round(2 * g.hand * 2**30)  # one HandHead, both hands as a batch of 2


def test_a_deeper_arch_runs_one_more_block() -> None:
    space = load_space(ROOT / "search_spaces" / "quickstart.yaml")
    bpm = space.all_blocks_per_module()
    flat = space.min_arch().to_flat()
    deeper = dict(flat, **{"body.stage1.depth": 2})
    from nasplat.space import Arch

    a, b = units_of(Arch.from_flat(flat), bpm), units_of(Arch.from_flat(deeper), bpm)
    assert len(b) == len(a) + 1
    extra = [u for u in b if u not in a]
    assert [u.kind for _, u in extra] == ["bottleneck"]
