"""The search-space DSL: the shipped spaces, sampling, variation, encoding and validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from nasplat.errors import ArchError
from nasplat.space import FLAT_KEYS, Arch, load_space

ROOT = Path(__file__).resolve().parents[2]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="module", params=[p.stem for p in SPACES])
def space(request):
    return load_space(ROOT / "search_spaces" / f"{request.param}.yaml")


def test_every_shipped_space_loads():
    assert {p.stem for p in SPACES} >= {"zoomnas", "zoomnet", "cpu_small"}


def test_dimensions_follow_flat_order(space):
    assert tuple(d.name for d in space.dimensions) == FLAT_KEYS
    for d in space.dimensions:
        if d.name.endswith(".groups"):
            assert d.depends_on == d.name.replace("groups", "channels")


def test_sample_is_valid_and_seeded(space):
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    rng = np.random.default_rng(1)
    for _ in range(50):
        arch = space.sample(rng)
        space.validate(arch)
        assert space.decode(space.encode(arch)) == arch


def test_mutation_and_crossover_stay_inside(space):
    rng = np.random.default_rng(3)
    for _ in range(30):
        a, b = space.sample(rng), space.sample(rng)
        space.validate(space.mutate(a, rng, 0.5))
        child = space.crossover(a, b, rng)
        space.validate(child)
        fa, fb, fc = a.to_flat(), b.to_flat(), child.to_flat()
        assert all(fc[k] in (fa[k], fb[k]) for k in FLAT_KEYS)
    a = space.sample(rng)
    assert space.mutate(a, rng, 0.0) == a


def test_arch_is_hashable_and_json_round_trips(space):
    arch = space.sample(np.random.default_rng(0))
    assert {arch: 1}[Arch.from_json(arch.to_json())] == 1
    assert json.loads(arch.key()) == arch.to_flat()


def test_extremes_bound_every_sample(space):
    hi, lo = space.max_arch().to_flat(), space.min_arch().to_flat()
    rng = np.random.default_rng(5)
    for _ in range(30):
        s = space.sample(rng).to_flat()
        for k in FLAT_KEYS:
            if k.endswith(("resolution", "channels", "depth")):
                assert lo[k] <= s[k] <= hi[k], k


def test_zoomnas_matches_table_2():
    s = load_space(ROOT / "search_spaces/zoomnas.yaml")
    c = {d.name: d.choices for d in s.dimensions}
    assert c["body.resolution"] == (256, 288, 320, 352, 384)
    assert c["body.stage1.depth"] == (2, 3, 4)
    assert c["body.stage3.depth"] == (8, 12, 16)
    assert c["body.stage4.depth"] == (8, 12)
    assert c["body.branch4.channels"] == (64, 128, 192, 256)
    assert c["face.resolution"] == (32, 48, 64, 80, 96)
    assert c["hand.feature_stage"] == (0, 1, 2, 3, 4)
    assert c["face.roi_expansion"] == (1.0, 1.1, 1.2, 1.3, 1.4, 1.5)
    # G in {C * 2^-i} while whole: C1 = 24 allows 24, 12, 6, 3.
    assert s.choices_for("body.branch1.groups", {"body.branch1.channels": 24}) == (3, 6, 12, 24)
    assert s.choices_for("body.branch4.groups", {"body.branch4.channels": 256}) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert s.max_arch().body.net.branch_groups == (1, 1, 1, 1)
    assert s.min_arch().body.net.branch_groups == (8, 16, 32, 64)  # depthwise at the min channels
    assert s.max_feature_channels("face") == 256


def test_log10_size_counts_dependent_groups():
    s = load_space(ROOT / "search_spaces/zoomnet.yaml")
    assert s.log10_size() == 0.0
    s = load_space(ROOT / "search_spaces/zoomnas.yaml")
    # Direct count of one branch: C1 in {8,16,24,32} has 4+5+4+6 group choices.
    assert s.choices_for("body.branch1.groups", {"body.branch1.channels": 8}) == (1, 2, 4, 8)
    total = 0
    for c in (8, 16, 24, 32):
        total += len(s.choices_for("body.branch1.groups", {"body.branch1.channels": c}))
    assert total == 4 + 5 + 4 + 6
    assert math.isclose(s.log10_size(), 30.19, abs_tol=0.01)


def test_zoomnet_is_the_paper_net():
    s = load_space(ROOT / "search_spaces/zoomnet.yaml")
    a = s.max_arch()
    assert a == s.min_arch()
    assert a.body.input_size == (384, 288)
    assert a.body.net.branch_channels == (32, 64, 128, 256)
    assert a.face.net.branch_channels == (18, 36, 72, 144)
    assert a.face.feature_stage == 0 and a.face.roi_expansion == 1.0 and a.face.resolution == 64


def test_validate_names_key_value_and_choices():
    s = load_space(ROOT / "search_spaces/zoomnas.yaml")
    flat = s.max_arch().to_flat()
    flat["body.branch1.channels"] = 24
    flat["body.branch1.groups"] = 5
    with pytest.raises(ArchError) as e:
        s.decode(flat, source="arch.json")
    msg = str(e.value)
    assert "arch.json" in msg and "body.branch1.groups" in msg and "5" in msg and "{3, 6, 12, 24}" in msg
    flat = s.max_arch().to_flat()
    flat["face.resolution"] = 100
    with pytest.raises(ArchError, match="face.resolution"):
        s.decode(flat)
    flat = s.max_arch().to_flat()
    del flat["hand.roi_expansion"]
    with pytest.raises(ArchError, match="hand.roi_expansion"):
        s.decode(flat)


def test_load_arch_refs(tmp_path):
    s = load_space(ROOT / "search_spaces/cpu_small.yaml")
    assert s.load_arch("max") == s.max_arch()
    p = tmp_path / "a.json"
    arch = s.sample(np.random.default_rng(2))
    p.write_text(arch.to_json())
    assert s.load_arch(str(p)) == arch
    p.write_text(json.dumps({"arch": arch.to_flat(), "gflops": {}}))
    assert s.load_arch(str(p)) == arch
    p.write_text("{not json")
    with pytest.raises(ArchError, match="a.json"):
        s.load_arch(str(p))
    with pytest.raises(ArchError, match="not found"):
        s.load_arch(str(tmp_path / "missing.json"))


def test_fingerprint_depends_on_choices_only(tmp_path):
    src = (ROOT / "search_spaces/cpu_small.yaml").read_text()
    a = tmp_path / "a.yaml"
    a.write_text(src.replace("name: cpu_small", "name: other") + "\n# comment\n")
    b = tmp_path / "b.yaml"
    b.write_text(src.replace('resolution: "[96, 128; 32]"', 'resolution: "[96, 160; 32]"'))
    base = load_space(ROOT / "search_spaces/cpu_small.yaml").fingerprint()
    assert load_space(a).fingerprint() == base
    assert load_space(b).fingerprint() != base
