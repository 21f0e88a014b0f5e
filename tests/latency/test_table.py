"""The table file round-trips, is refused on another machine or space, and the predictor sums
the entries of the units the arch runs, corrected by the fitted scale and offset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nasplat.errors import ConfigError
from nasplat.latency import LatencyPredictor, fit_correction, load_table, units_of
from nasplat.latency.timing import machine
from nasplat.space import Arch, load_space
from tests.latency._tables import synthetic_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def space():  # noqa: ANN201
    return load_space(ROOT / "search_spaces" / "quickstart.yaml")


def test_round_trip(tmp_path: Path, space) -> None:  # noqa: ANN001
    table = synthetic_table(space, scale=1.5, offset=0.25)
    table.save(tmp_path / "lut.json")
    loaded = load_table(tmp_path / "lut.json")
    assert loaded == table
    assert loaded.fingerprint == table.fingerprint
    assert json.loads((tmp_path / "lut.json").read_text())["fingerprint"] == table.fingerprint


def test_refused_on_another_machine(space) -> None:  # noqa: ANN001
    table = synthetic_table(space, name="Some Other CPU @ 9 GHz")
    with pytest.raises(ConfigError, match="measured on another machine") as e:
        table.check_machine(machine("cpu", "onnx"), source="lut.json")
    assert "\n" not in str(e.value) and "Some Other CPU" in str(e.value)
    synthetic_table(space).check_machine(machine("cpu", "onnx"))  # this machine: accepted


def test_fingerprint_covers_backend_threads_and_batch(space) -> None:  # noqa: ANN001
    from dataclasses import replace

    table = synthetic_table(space)
    assert replace(table, settings={**table.settings, "threads": 4}).fingerprint != table.fingerprint
    assert replace(table, settings={**table.settings, "batch": 8}).fingerprint != table.fingerprint
    assert synthetic_table(space, backend="torch").fingerprint != table.fingerprint


def test_refused_for_another_space(space) -> None:  # noqa: ANN001
    other = load_space(ROOT / "search_spaces" / "cpu_small.yaml")
    with pytest.raises(ConfigError, match="profiled for space"):
        LatencyPredictor(synthetic_table(space), other)


@pytest.mark.parametrize("text", ["{", '{"format": "x"}', '{"format": "nasplat-latency-lut", "version": 1}'])
def test_malformed_table_is_one_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "lut.json").write_text(text)
    with pytest.raises(ConfigError):
        load_table(tmp_path / "lut.json")


def test_prediction_is_the_corrected_sum_of_the_units_run(space) -> None:  # noqa: ANN001
    table = synthetic_table(space, scale=1.25, offset=0.5)
    predictor = LatencyPredictor(table, space)
    arch = space.sample(np.random.default_rng(0))
    entries = [table.entries[u.key] for _, u in units_of(arch, space.all_blocks_per_module())]
    assert predictor(arch) == pytest.approx(1.25 * sum(entries) + 0.5)
    parts = predictor.parts(arch)
    assert parts["total"] == pytest.approx(parts["body"] + parts["face"] + parts["hand"] + parts["offset"])


def test_a_subnet_with_an_extra_block_costs_more_by_that_block(space) -> None:  # noqa: ANN001
    table = synthetic_table(space, scale=1.25)
    predictor = LatencyPredictor(table, space)
    flat = space.min_arch().to_flat()
    shallow, deep = Arch.from_flat(flat), Arch.from_flat(dict(flat, **{"body.stage3.depth": 2}))
    extra = predictor(deep) - predictor(shallow)
    assert extra > 0
    bpm = space.all_blocks_per_module()
    added = [u for _, u in units_of(deep, bpm)]
    for _, u in units_of(shallow, bpm):
        added.remove(u)
    assert {u.kind for u in added} == {"basic", "fuse"}  # one more HRNet module: 3 blocks, 3 fused outputs
    assert extra == pytest.approx(1.25 * sum(table.entries[u.key] for u in added))


def test_a_unit_missing_from_the_table_is_one_error(space) -> None:  # noqa: ANN001
    from dataclasses import replace

    table = synthetic_table(space)
    arch = space.max_arch()
    key = units_of(arch, space.all_blocks_per_module())[0][1].key
    entries = {k: v for k, v in table.entries.items() if k != key}
    with pytest.raises(ConfigError, match="lacks unit"):
        LatencyPredictor(replace(table, entries=entries), space)(arch)


def test_fit_correction_recovers_a_linear_relation() -> None:
    summed = [1.0, 2.0, 4.0, 5.0]
    assert fit_correction(summed, [2 * s + 0.5 for s in summed]) == pytest.approx((2.0, 0.5))
    assert fit_correction([3.0], [4.0]) == pytest.approx((1.0, 1.0))
    assert fit_correction([], []) == (1.0, 0.0)
    # noisy points whose line has a negative offset: a scale through the origin instead
    scale, offset = fit_correction([1.0, 2.0, 3.0], [1.0, 5.0, 9.0])
    assert offset == 0.0 and scale == pytest.approx((1 + 10 + 27) / 14)


def test_fastest_is_no_slower_than_any_sampled_arch(space) -> None:  # noqa: ANN001
    predictor = LatencyPredictor(synthetic_table(space), space)
    arch, fastest = predictor.fastest()
    space.validate(arch)
    assert fastest == pytest.approx(predictor(arch))
    rng = np.random.default_rng(0)
    assert fastest <= min(predictor(space.sample(rng)) for _ in range(300))
    assert fastest <= predictor(space.min_arch())


def _bad_table(tmp_path: Path, space, change) -> Path:  # noqa: ANN001
    data = synthetic_table(space).to_dict()
    change(data)
    path = tmp_path / "lut.json"
    path.write_text(json.dumps(data))  # NaN and Infinity are written as JSON's extensions, as a table could hold them
    return path


def _set_first_entry(value: object):  # noqa: ANN202
    def change(data: dict) -> None:
        data["entries"][next(iter(data["entries"]))] = value
    return change


def _set_correction(key: str, value: object):  # noqa: ANN202
    def change(data: dict) -> None:
        data["correction"][key] = value
    return change


@pytest.mark.parametrize(("change", "key"), [
    (_set_first_entry(-3.5), "entries."),
    (_set_first_entry(float("nan")), "entries."),
    (_set_first_entry(float("inf")), "entries."),
    (_set_first_entry("0.04"), "entries."),
    (_set_first_entry(True), "entries."),
    (_set_correction("scale", -1.0), "correction.scale"),
    (_set_correction("scale", 0.0), "correction.scale"),
    (_set_correction("scale", float("nan")), "correction.scale"),
    (_set_correction("offset_ms", -305.8), "correction.offset_ms"),
    (_set_correction("offset_ms", float("inf")), "correction.offset_ms"),
    (lambda data: data.update(call_overhead_ms=float("-inf")), "call_overhead_ms"),
])
def test_a_table_with_a_negative_or_non_finite_number_is_refused_naming_the_file_and_key(
        tmp_path: Path, space, change, key: str) -> None:  # noqa: ANN001
    path = _bad_table(tmp_path, space, change)
    with pytest.raises(ConfigError) as e:
        load_table(path)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{path}: {key}"), line
    assert e.value.source == str(path)


def test_an_entry_of_zero_is_a_block_faster_than_the_call_overhead_and_is_kept(tmp_path: Path, space) -> None:  # noqa: ANN001
    path = _bad_table(tmp_path, space, _set_first_entry(0.0))  # profile_space clamps at 0 ms
    assert min(load_table(path).entries.values()) == 0.0


def test_fit_correction_never_gives_a_negative_offset_from_one_point() -> None:
    # one whole subnet measured faster than the sum of its blocks: the table must still load
    scale, offset = fit_correction([4.0], [3.0])
    assert offset >= 0 and scale * 4.0 + offset == pytest.approx(3.0)
    scale, offset = fit_correction([2.0, 2.0], [1.0, 1.5])
    assert offset >= 0 and scale > 0


def test_a_latency_table_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        load_table("/dev/zero")
    with pytest.raises(ConfigError, match="not found; make one with `nasplat latency profile`"):
        load_table(tmp_path / "missing.json")
