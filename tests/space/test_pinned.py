"""`SearchSpace.pinned`: a sub-space with some dimensions at one value (`search.fix`), whose archs
are archs of the full space, searched by every searcher without leaving the pins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nasplat.config import EvolutionConfig
from nasplat.errors import ArchError, ConfigError
from nasplat.search import SEARCHERS, AnalyticObjective, build_searcher, total_gflops_fn
from nasplat.space import SearchSpace, load_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
SMALL_EVOLUTION = EvolutionConfig(population=8, top_k=3, mutations=4, crossovers=4, mutation_prob=0.5)


@pytest.fixture(scope="module")
def small() -> SearchSpace:
    return load_space(SPACES / "cpu_small.yaml")


@pytest.fixture(scope="module")
def zoomnas() -> SearchSpace:
    return load_space(SPACES / "zoomnas.yaml")


def _heads_and_a_group(space: SearchSpace) -> dict[str, int | float]:
    """"Search only the body": every face and hand choice at the smallest subnet's, and one group."""
    pins = {k: v for k, v in space.min_arch().to_flat().items() if not k.startswith("body.")}
    return pins | {"body.branch2.groups": 4}


def _keeps(space: SearchSpace, full: SearchSpace, archs: list, pins: dict) -> None:  # noqa: ANN001
    for arch in archs:
        full.validate(arch)
        space.validate(arch)
        flat = arch.to_flat()
        assert {k: flat[k] for k in pins} == pins


@pytest.mark.parametrize("name", sorted(SEARCHERS))
def test_every_searcher_asks_only_archs_with_the_pinned_values(small: SearchSpace, name: str) -> None:
    pins = _heads_and_a_group(small)
    space = small.pinned(pins)
    searcher = build_searcher(name, space, total_gflops_fn(small), None, 3, evolution=SMALL_EVOLUTION)
    objective = AnalyticObjective(small)  # the full space's objective evaluates them unchanged
    archs = []
    for _ in range(30):  # evolution: 8 random, then generations of mutants and crossovers
        arch = searcher.ask()
        searcher.tell(arch, objective.evaluate(arch))
        archs.append(arch)
    _keeps(space, small, archs, pins)
    assert len({a.to_flat()["body.resolution"] for a in archs}) > 1  # the rest is still searched


def test_samples_mutations_and_crossovers_keep_a_group_pin_and_its_valid_channels(zoomnas: SearchSpace) -> None:
    pins = {"body.branch1.groups": 4, "face.roi_expansion": 1.2}
    space = zoomnas.pinned(pins)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(100)]
    archs += [space.mutate(a, rng, 1.0) for a in archs]
    archs += [space.crossover(a, b, rng) for a, b in zip(archs, reversed(archs))]
    _keeps(space, zoomnas, archs, pins)
    # 4 is a halving of 8, 16 and 32 channels, not of 24 (24, 12, 6, 3)
    assert space.choices_for("body.branch1.channels") == (8, 16, 32)
    assert {a.to_flat()["body.branch1.channels"] for a in archs} == {8, 16, 32}
    assert space.min_arch().to_flat()["body.branch1.groups"] == 4
    zoomnas.validate(space.max_arch())


def test_the_pinned_space_rejects_an_arch_of_the_full_space_off_the_pins(zoomnas: SearchSpace) -> None:
    space = zoomnas.pinned({"body.resolution": 256})
    off = zoomnas.max_arch()
    with pytest.raises(ArchError, match="body.resolution"):
        space.validate(off)


def test_the_fingerprint_changes_with_the_pins(zoomnas: SearchSpace, small: SearchSpace) -> None:
    one = zoomnas.pinned({"body.resolution": 256}).fingerprint()
    other = zoomnas.pinned({"body.resolution": 288}).fingerprint()
    assert len({zoomnas.fingerprint(), one, other}) == 3
    assert zoomnas.pinned({}) is zoomnas
    # a pin on a dimension with one choice leaves the same archs, hence the same fingerprint
    assert small.pinned({"body.stage2.depth": 1}).fingerprint() == small.fingerprint()


@pytest.mark.parametrize("fix, key, needle", [
    ({"body.nope": 1}, "body.nope", "allowed: body.resolution"),
    ({"body.resolution": 100}, "body.resolution", "allowed: {256, 288, 320, 352, 384}"),
    ({"face.roi_expansion": 1.25}, "face.roi_expansion", "allowed: {1, 1.1, 1.2"),
    ({"body.branch1.groups": 64}, "body.branch1.groups", "allowed: {1, 2, 3, 4"),
    ({"body.branch1.channels": 24, "body.branch1.groups": 4}, "body.branch1.groups",
     "conflicts with the pin body.branch1.channels = 24; allowed for it: {3, 6, 12, 24}"),
])
def test_a_bad_pin_is_a_config_error_naming_its_key(zoomnas: SearchSpace, fix: dict, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        zoomnas.pinned(fix)
    assert info.value.key == key
    assert needle in str(info.value)
