"""The classification search space: the shipped YAML files, schema errors, archs as data, and the
pure sampling, variation, encoding and validation functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from nasplat.errors import ArchError, ConfigError
from nasplat.tasks.classification.space import (
    BlockArch,
    ClassificationSpace,
    MobileNetArch,
    load_classification_space,
    make_divisible,
    parse_classification_space,
)

ROOT = Path(__file__).resolve().parents[3]
OFA = ROOT / "search_spaces" / "classification" / "ofa_mbv3.yaml"
QUICKSTART = ROOT / "search_spaces" / "classification" / "quickstart.yaml"


@pytest.fixture(scope="module")
def space() -> ClassificationSpace:
    return load_classification_space(QUICKSTART)


@pytest.fixture(scope="module")
def ofa() -> ClassificationSpace:
    return load_classification_space(OFA)


def _quickstart_data() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


# --- the shipped spaces --------------------------------------------------------------------------
def test_ofa_space_is_ofa_mobilenetv3_large(ofa: ClassificationSpace) -> None:
    spec = ofa.spec
    assert ofa.resolutions == tuple(range(128, 225, 4))
    assert (spec.stem_channels, spec.first_block_channels) == (16, 16)
    assert [s.channels for s in spec.stages] == [24, 40, 80, 112, 160]
    assert [s.stride for s in spec.stages] == [2, 2, 2, 1, 2]
    assert [s.activation for s in spec.stages] == ["relu", "relu", "hswish", "hswish", "hswish"]
    assert [s.se for s in spec.stages] == [False, True, False, True, True]
    assert (spec.depths, spec.kernel_sizes, spec.expand_ratios) == ((2, 3, 4), (3, 5, 7), (3, 4, 6))
    assert (spec.final_expand_channels, spec.feature_mix_channels) == (960, 1280)
    # OFA: ((3 * 3)^2 + (3 * 3)^3 + (3 * 3)^4)^5 ~ 2e19 subnets, times 25 resolutions
    assert ofa.log10_size() == pytest.approx(np.log10(25) + 5 * np.log10(81 + 729 + 6561))


def test_quickstart_space_keeps_the_structure_with_narrow_channels(
    space: ClassificationSpace, ofa: ClassificationSpace
) -> None:
    assert space.resolutions == (24, 28, 32)
    assert [s.channels for s in space.spec.stages] == [16, 24, 40, 48, 64]
    same = ("stride", "activation", "se")
    assert [[getattr(s, k) for k in same] for s in space.spec.stages] == [
        [getattr(s, k) for k in same] for s in ofa.spec.stages
    ]
    assert space.fingerprint() != ofa.fingerprint()


def test_make_divisible_is_ofas() -> None:
    assert [make_divisible(v) for v in (16 * 3, 24 * 4, 40 * 6, 20, 3, 100)] == [48, 96, 240, 24, 8, 104]


def test_dimensions_follow_the_flat_order_of_the_largest_arch(space: ClassificationSpace) -> None:
    names = [d.name for d in space.dimensions]
    assert names == list(space.max_arch().to_flat())
    by_name = {d.name: d for d in space.dimensions}
    assert by_name["stage2.block2.kernel"].depends_on is None  # every depth runs blocks 1 and 2
    assert by_name["stage2.block3.kernel"].depends_on == "stage2.depth"
    assert space.choices_for("stage2.block3.expand", {"stage2.depth": 3}) == (3, 4, 6)
    assert space.choices_for("stage2.block4.expand", {"stage2.depth": 3}) == ()
    with pytest.raises(ArchError, match="stage2.depth"):
        space.choices_for("stage2.block4.expand", {})
    with pytest.raises(ArchError) as e:
        space.choices_for("stage9.depth")
    assert e.value.key == "stage9.depth"


# --- schema errors -------------------------------------------------------------------------------
_BAD_EDITS = [
    (lambda d: d["stages"][2].update(channels=0), "stages.2.channels", "greater than 0"),
    (lambda d: d["stages"][1].update(stride=3), "stages.1.stride", "1 or 2"),
    (lambda d: d["stages"][0].update(activation="gelu"), "stages.0.activation", "'relu' or 'hswish'"),
    (lambda d: d["stages"][0].update(width=8), "stages.0.width", "unknown key"),
    (lambda d: d.update(kernel_sizes=[3, 4]), "kernel_sizes.1", "odd"),
    (lambda d: d.update(kernel_sizes=[3, 9]), "kernel_sizes.1", "1..7"),
    (lambda d: d.update(depths=[0, 2]), "depths.0", "greater than 0"),
    (lambda d: d.update(depths=[2, 2]), "depths", "listed twice"),
    (lambda d: d.update(expand_ratios=[1, 3]), "expand_ratios.0", "at least 2"),
    (lambda d: d.update(resolutions=[0, 32]), "resolutions.0", "greater than 0"),
    (lambda d: d.update(resolutions={"min": 32, "max": 24, "step": 4}), "resolutions", "below min"),
    (lambda d: d.update(resolutions={"min": 24, "max": 32, "step": 3}), "resolutions", "does not divide"),
    (lambda d: d.update(task="pose"), "task", "classification"),
    (lambda d: d.pop("feature_mix_channels"), "feature_mix_channels", "missing"),
    (lambda d: d.update(strides=[2]), "strides", "allowed: task, name"),
]


@pytest.mark.parametrize(("edit", "key", "words"), [pytest.param(*case, id=case[1]) for case in _BAD_EDITS])
def test_bad_yaml_names_the_file_and_key(tmp_path: Path, edit, key: str, words: str) -> None:
    data = _quickstart_data()
    edit(data)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_classification_space(path)
    assert e.value.source == str(path)
    assert e.value.key == key
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_resolution_range_expands_and_choices_sort() -> None:
    data = _quickstart_data() | {"resolutions": {"min": 24, "max": 32, "step": 4}, "kernel_sizes": [7, 3, 5]}
    space = parse_classification_space(data, "inline")
    assert space.resolutions == (24, 28, 32)
    assert space.spec.kernel_sizes == (3, 5, 7)
    assert space.fingerprint() == load_classification_space(QUICKSTART).fingerprint()


def test_unreadable_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("task: classification\nstages: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_classification_space(path)
    with pytest.raises(ConfigError, match="cannot read|not found|No such"):
        load_classification_space(tmp_path / "missing.yaml")


def test_fingerprint_ignores_the_name_but_not_the_choices() -> None:
    base = parse_classification_space(_quickstart_data(), "a")
    renamed = parse_classification_space(_quickstart_data() | {"name": "other", "description": "x"}, "b")
    narrower = parse_classification_space(_quickstart_data() | {"depths": [2, 3]}, "c")
    assert base.fingerprint() == renamed.fingerprint() != narrower.fingerprint()


# --- archs as data -------------------------------------------------------------------------------
def test_arch_is_hashable_and_round_trips(space: ClassificationSpace) -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch
        assert {arch: 1}[MobileNetArch.from_json(arch.to_json())] == 1
        assert json.loads(arch.key()) == arch.to_flat()
        assert arch.depths == tuple(len(s) for s in arch.stages)
        assert len(arch.to_flat()) == 1 + 5 + 2 * sum(arch.depths)


def test_from_flat_ignores_inactive_blocks(space: ClassificationSpace) -> None:
    flat = space.max_arch().to_flat()  # every block of every stage
    flat["stage3.depth"] = 2
    flat["stage3.block4.kernel"] = 3  # inactive: not a choice of the arch
    arch = space.decode(flat)
    assert arch.depths == (4, 4, 2, 4, 4)
    flat["stage3.block4.kernel"] = 5
    assert space.decode(flat) == arch
    assert "stage3.block3.kernel" not in arch.to_flat()


def test_from_flat_names_missing_and_malformed_keys(space: ClassificationSpace) -> None:
    flat = space.min_arch().to_flat()
    for key, value, words in [
        ("stage2.depth", 3, "missing choice stage2.block3.kernel"),
        ("stage2.block1.kernel", 2.5, "whole number"),
        ("stage2.block1.kernel", True, "not a number"),
        ("stage2.bloc1.kernel", 3, "unknown choice"),
        ("stage7.block1.kernel", 3, "no stage7.depth"),
    ]:
        with pytest.raises(ArchError, match=words) as e:
            space.decode(flat | {key: value}, source="arch.json")
        assert e.value.source == "arch.json"
    without = dict(flat)
    del without["resolution"]
    with pytest.raises(ArchError) as e:
        MobileNetArch.from_flat(without)
    assert e.value.key == "resolution"


def test_validate_names_the_key_value_and_choices(space: ClassificationSpace) -> None:
    arch = space.max_arch()
    stages = list(arch.stages)
    stages[2] = (stages[2][0], BlockArch(kernel=9, expand=6), *stages[2][2:])
    with pytest.raises(ArchError) as e:
        space.validate(MobileNetArch(arch.resolution, tuple(stages)), source="cand.json")
    assert e.value.key == "stage3.block2.kernel"
    assert e.value.source == "cand.json"
    assert "9" in str(e.value) and "{3, 5, 7}" in str(e.value)
    with pytest.raises(ArchError) as e:
        space.validate(MobileNetArch(40, arch.stages))
    assert e.value.key == "resolution" and "{24, 28, 32}" in str(e.value)
    with pytest.raises(ArchError) as e:
        space.validate(MobileNetArch(32, arch.stages[:4]))
    assert e.value.key == "stages"
    with pytest.raises(ArchError) as e:
        space.validate(MobileNetArch(32, (arch.stages[0][:1], *arch.stages[1:])))
    assert e.value.key == "stage1.depth"


def test_load_arch_reads_json_text_and_files(space: ClassificationSpace, tmp_path: Path) -> None:
    arch = space.sample(np.random.default_rng(4))
    path = tmp_path / "arch.json"
    path.write_text(json.dumps({"arch": arch.to_flat()}))
    assert space.load_arch(str(path)) == arch == space.load_arch(arch.to_json())
    assert space.load_arch("max") == space.max_arch()
    path.write_text(json.dumps(arch.to_flat() | {"resolution": 40}))
    with pytest.raises(ArchError) as e:
        space.load_arch(str(path))
    assert (e.value.source, e.value.key) == (str(path), "resolution")
    with pytest.raises(ArchError, match="not found"):
        space.load_arch(str(tmp_path / "nope.json"))


# --- sampling and variation ----------------------------------------------------------------------
def test_sampling_is_valid_seeded_and_bounded_by_the_extremes(space: ClassificationSpace) -> None:
    assert space.sample(np.random.default_rng(7)) == space.sample(np.random.default_rng(7))
    lo, hi = space.min_arch(), space.max_arch()
    space.validate(lo)
    space.validate(hi)
    rng = np.random.default_rng(1)
    seen_depths = set()
    for _ in range(50):
        arch = space.sample(rng)
        space.validate(arch)
        seen_depths.update(arch.depths)
        assert lo.resolution <= arch.resolution <= hi.resolution
        for stage in arch.stages:
            assert all(3 <= b.kernel <= 7 and 3 <= b.expand <= 6 for b in stage)
    assert seen_depths == {2, 3, 4}


def test_mutation_stays_inside_and_is_seeded(space: ClassificationSpace) -> None:
    rng = np.random.default_rng(3)
    a = space.sample(rng)
    assert space.mutate(a, rng, 0.0) == a
    assert space.mutate(a, np.random.default_rng(5), 0.5) == space.mutate(a, np.random.default_rng(5), 0.5)
    for _ in range(30):
        space.validate(space.mutate(space.sample(rng), rng, 0.5))
    with pytest.raises(ValueError):
        space.mutate(a, rng, 1.5)


def test_mutation_that_deepens_a_stage_draws_the_new_blocks(space: ClassificationSpace) -> None:
    shallow = space.min_arch()  # depth 2 everywhere
    rng = np.random.default_rng(0)
    grown = [m for m in (space.mutate(shallow, rng, 1.0) for _ in range(40)) if max(m.depths) > 2]
    assert grown
    for m in grown:
        space.validate(m)
    new_blocks = {b for m in grown for stage in m.stages for b in stage[2:]}
    assert len(new_blocks) > 1  # drawn, not copied from one template


def test_crossover_takes_each_choice_from_a_parent(space: ClassificationSpace) -> None:
    rng = np.random.default_rng(2)
    for _ in range(30):
        a, b = space.sample(rng), space.sample(rng)
        child = space.crossover(a, b, rng)
        space.validate(child)
        assert child.resolution in (a.resolution, b.resolution)
        for sc, sa, sb in zip(child.stages, a.stages, b.stages):
            assert len(sc) in (len(sa), len(sb))
            for i, block in enumerate(sc):
                kernels = {s[i].kernel for s in (sa, sb) if i < len(s)}
                expands = {s[i].expand for s in (sa, sb) if i < len(s)}
                assert block.kernel in kernels and block.expand in expands
    a, b = space.sample(rng), space.sample(rng)
    assert space.crossover(a, b, np.random.default_rng(9)) == space.crossover(a, b, np.random.default_rng(9))
    assert space.crossover(a, a, rng) == a
