"""Profiling a (tiny) space times every unit on both backends, fits the correction on whole
subnets, writes a table that predicts every arch, and resumes an interrupted build."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from nasplat.latency import LatencyPredictor, load_table, space_units
from nasplat.latency.profile import profile_space
from nasplat.latency.timing import TimingSettings, machine
from nasplat.space import load_space
from tests.conftest import TINY_SPACE

FAST = {"threads": 1, "warmup": 1, "repeats": 3}
# the tiny space narrowed to one arch: 55 units, a few seconds to profile even on onnxruntime
ONE_POINT = (TINY_SPACE.replace("resolution: [64, 96]", "resolution: [64]")
             .replace("channels: [4, 8], groups: {halvings: 1}", "channels: [4], groups: [1]")
             .replace("channels: [4, 8], groups: [1]", "channels: [4], groups: [1]")
             .replace("resolution: [8, 16]", "resolution: [8]").replace("feature_stage: [0, 1, 2]", "feature_stage: [2]"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(ONE_POINT)
    return load_space(path)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_profile_writes_a_table_that_predicts_every_arch(tmp_path: Path, tiny, backend: str) -> None:  # noqa: ANN001
    out = tmp_path / "lut.json"
    calibration = 1 if backend == "torch" else 0  # a whole-network ONNX export takes seconds
    table = profile_space(tiny, TimingSettings(backend=backend, **FAST), out, calibration=calibration)  # type: ignore[arg-type]
    loaded = load_table(out)
    assert loaded == table
    assert set(loaded.entries) == {u.key for u in space_units(tiny)}
    assert all(v >= 0 for v in loaded.entries.values())
    assert loaded.settings["backend"] == backend and loaded.machine == machine("cpu", backend)
    assert len(loaded.fit) == calibration and loaded.scale > 0
    assert not out.with_name(out.name + ".partial").exists()
    predictor = LatencyPredictor(loaded, tiny)
    assert predictor(tiny.max_arch()) > 0


def test_an_interrupted_profile_resumes_from_its_partial_file(tmp_path: Path, tiny) -> None:  # noqa: ANN001
    settings = TimingSettings(backend="torch", **FAST)  # type: ignore[arg-type]
    out = tmp_path / "lut.json"
    units = space_units(tiny)
    done = {u.key: 123.0 for u in units[:-3]}  # what a killed build had measured (a marker value)
    header = {"space": tiny.fingerprint(), "settings": asdict(settings), "machine": machine("cpu", "torch")}
    out.with_name("lut.json.partial").write_text(json.dumps({"header": header, "entries": done}))
    table = profile_space(tiny, settings, out, calibration=0)
    assert all(table.entries[k] == 123.0 for k in done)
    assert all(table.entries[u.key] != 123.0 for u in units[-3:])


def test_a_damaged_entry_of_the_partial_file_is_timed_again(tmp_path: Path, tiny) -> None:  # noqa: ANN001
    settings = TimingSettings(backend="torch", **FAST)  # type: ignore[arg-type]
    out = tmp_path / "lut.json"
    units = space_units(tiny)
    done: dict[str, object] = {u.key: 123.0 for u in units[:-3]}
    done[units[0].key], done[units[1].key] = float("nan"), -5.0
    header = {"space": tiny.fingerprint(), "settings": asdict(settings), "machine": machine("cpu", "torch")}
    out.with_name("lut.json.partial").write_text(json.dumps({"header": header, "entries": done}))
    table = profile_space(tiny, settings, out, calibration=0)
    assert all(0 <= table.entries[u.key] < 123.0 for u in units[:2])
    assert load_table(out) == table
