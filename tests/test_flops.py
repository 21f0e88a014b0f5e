"""GFLOPs: the paper's ZoomNet numbers, and analytic == fvcore on archs of every shipped space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasplat.flops import GFlops, analytic_gflops, fvcore_gflops
from nasplat.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted(p.stem for p in (ROOT / "search_spaces").glob("*.yaml"))


def test_zoomnet_reproduces_table_10() -> None:
    space = load_space(ROOT / "search_spaces" / "zoomnet.yaml")
    g = analytic_gflops(space.max_arch(), space.all_blocks_per_module())
    # paper Table 10: BodyNet 16.02, FaceHead 4.19, HandHead 4.14, overall 28.49
    for got, paper in ((g.body, 16.02), (g.face, 4.19), (g.hand, 4.14), (g.total, 28.49)):
        assert got == pytest.approx(paper, rel=0.01)
    assert g.total == pytest.approx(g.body + g.face + 2 * g.hand)


@pytest.mark.parametrize("name", SPACES)
def test_analytic_matches_fvcore(name: str) -> None:
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml")
    rng = np.random.default_rng(0)
    # full-size nets are costly to trace on 2 cores: the big space gets its min and one sample
    n_random = 3 if name == "cpu_small" else 1
    archs = [space.min_arch()] + [space.sample(rng) for _ in range(n_random)]
    if name != "zoomnas":
        archs.append(space.max_arch())
    bpm = space.all_blocks_per_module()
    for arch in dict.fromkeys(archs):  # the one-choice space yields the same arch each time
        a = analytic_gflops(arch, bpm)
        f = fvcore_gflops(arch, bpm)
        for part in ("body", "face", "hand", "total"):
            assert getattr(a, part) == pytest.approx(getattr(f, part), rel=0.01), (name, part, arch.key())


def test_grouped_convs_cost_less() -> None:
    space = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
    arch = space.max_arch()
    import dataclasses

    grouped = dataclasses.replace(
        arch, body=dataclasses.replace(arch.body, net=dataclasses.replace(arch.body.net, branch_groups=(2, 2, 2, 2)))
    )
    bpm = space.all_blocks_per_module()
    dense, cheap = analytic_gflops(arch, bpm), analytic_gflops(grouped, bpm)
    assert cheap.body < dense.body and cheap.face == dense.face
    assert isinstance(cheap, GFlops) and set(cheap.as_dict()) == {"body", "face", "hand", "total"}


def test_cli_json_prints_exactly_the_four_numbers(tmp_path: Path) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from nasplat.cli.flops import register

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a second command keeps `flops` a named sub-command
    space_file = ROOT / "search_spaces" / "cpu_small.yaml"
    space = load_space(space_file)
    arch_file = tmp_path / "arch.json"
    arch = space.sample(np.random.default_rng(4))
    arch_file.write_text(arch.to_json())
    result = CliRunner().invoke(app, ["flops", str(space_file), "--arch", str(arch_file), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == analytic_gflops(arch, space.all_blocks_per_module()).as_dict()
    table = CliRunner().invoke(app, ["flops", str(space_file), "--arch", "min"])
    assert table.exit_code == 0 and "HandHead" in table.output
    assert f"{analytic_gflops(space.min_arch(), space.all_blocks_per_module()).total:.3f}" in table.output


def test_fvcore_counts_a_supernet_or_static_net_like_its_arch() -> None:
    from nasplat.models import build_supernet

    space = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
    net = build_supernet(space, seed=0)
    arch = space.sample(np.random.default_rng(9))
    net.set_arch(arch)
    expected = analytic_gflops(arch, space.all_blocks_per_module())
    for model in (net, net.extract()):
        got = fvcore_gflops(model)
        for part in ("body", "face", "hand", "total"):
            assert getattr(got, part) == pytest.approx(getattr(expected, part), rel=1e-6)
    assert net.arch == arch
