"""benchmarks/bench_ofa.py: on a handful of archs, Once-for-All's own MobileNetV3 (the `ofa`
package) and nasplat's build static subnets with the same MACs and parameters (a mismatch fails
here), and a short speed run at a small resolution records both libraries' step times and their
ratio (no timing is asserted). Skipped, with the reason, where `ofa` does not import."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "benchmarks" / "_ofa_standin" / "torchvision"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("bench_ofa")


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_torchvision_refuses_to_transform() -> None:
    # loaded by path under private names: this process's `torchvision`, if any, stays what it was
    transforms = _module(STANDIN / "transforms" / "__init__.py", "_standin_transforms")
    functional = _module(STANDIN / "transforms" / "functional.py", "_standin_functional")

    class Subclass(transforms.RandomResizedCrop):  # what OFA's data utilities do at import
        def __init__(self, size: int) -> None:
            super().__init__(size)

    for make in (lambda: transforms.RandomResizedCrop(224), lambda: transforms.RandomCrop(224), lambda: Subclass(224)):
        with pytest.raises(RuntimeError, match="stand-in"):
            make()
    with pytest.raises(AttributeError, match="stand-in"):
        functional.resized_crop  # noqa: B018


def test_ofa_setting_pads_every_stage_to_four_blocks(bench: ModuleType) -> None:
    class Block:
        def __init__(self, kernel: int, expand: int) -> None:
            self.kernel, self.expand = kernel, expand

    class Arch:
        stages = ((Block(3, 3), Block(5, 4)), (Block(7, 6),) * 4, (Block(5, 3),) * 3, (Block(3, 6),) * 2,
                  (Block(7, 4), Block(3, 3)))

    s = bench.ofa_setting(Arch())
    assert s["d"] == [2, 4, 3, 2, 2]
    assert s["ks"] == [3, 5, 5, 5, 7, 7, 7, 7, 5, 5, 5, 5, 3, 3, 3, 3, 7, 3, 3, 3]
    assert s["e"] == [3, 4, 4, 4, 6, 6, 6, 6, 3, 3, 3, 3, 6, 6, 6, 6, 4, 3, 3, 3]

    class TooDeep:
        stages = ((Block(3, 3),) * 5,) * 5

    with pytest.raises(ValueError, match="stage 1: 5 blocks"):
        bench.ofa_setting(TooDeep())


def test_time_interleaved_alternates_which_run_goes_first(bench: ModuleType) -> None:
    calls: list[tuple[str, int]] = []
    times = bench.time_interleaved({"a": lambda i: calls.append(("a", i)), "b": lambda i: calls.append(("b", i))},
                                   steps=3, warmup=1)
    assert calls == [("a", 0), ("b", 0), ("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert {k: {m: len(t) for m, t in v.items()} for k, v in times.items()} == {
        "a": {"wall": 3, "cpu": 3}, "b": {"wall": 3, "cpu": 3}}


@pytest.mark.timeout(180)
def test_parity_holds_and_speed_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "ofa.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_ofa.py"), "--archs", "4", "--steps", "1", "--warmup", "0",
           "--random", "1", "--batch", "2", "--resolution-cap", "64", "--threads", "2", "--json", str(out), "--sections", "parity", "speed"]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    res = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True, timeout=170)
    if res.returncode == 2 and "ofa is not importable" in res.stdout:
        pytest.skip(res.stdout.strip())
    assert res.returncode in (0, 1), res.stdout[-3000:] + res.stderr[-3000:]
    data = json.loads(out.read_text())

    settings = data["settings"]
    assert settings["archs"] == 4 and settings["threads_used"] == 2 and settings["ofa"]
    parity = data["parity"]
    assert [r["arch"] for r in parity["rows"]] == ["max", "min", "random0", "random1"]
    for r in parity["rows"]:
        assert len(r["ofa"]["ks"]) == len(r["ofa"]["e"]) == 20 and len(r["ofa"]["d"]) == 5
        assert 0 < r["macs_ofa"] and 0 < r["params_ofa"]
    mismatches = [(r["arch"], {k: r[k] for k in r if k.startswith(("macs", "params"))})
                  for r in parity["rows"] if not (r["equal"] and r["analytic_equal"])]
    assert not mismatches, mismatches
    assert parity["differ"] == parity["analytic_differ"] == 0 and res.returncode == 0
    big, small = parity["rows"][0], parity["rows"][1]
    assert big["macs_ofa"] > small["macs_ofa"] and big["params_ofa"] > small["params_ofa"]
    assert "0 of 4 archs differ" in res.stdout

    speed = data["speed"]
    assert speed["members_per_step"] == 3 and speed["sizes"] == [64] and speed["resolution_cap"] == 64
    for key in ("times_ms", "cpu_times_ms"):
        assert {k: len(v) for k, v in speed[key].items()} == {"nasplat": 1, "ofa": 1}
    for key in ("ratio", "paired_ratio", "cpu_ratio"):
        assert math.isfinite(speed[key]) and speed[key] > 0
    assert speed["ratio"] == pytest.approx(speed["ms_per_step"]["nasplat"] / speed["ms_per_step"]["ofa"])
    assert speed["met"] == (speed["ratio"] <= 1.0)
    assert f"ratio nasplat/OFA: {speed['ratio']:.3f}" in res.stdout


@pytest.mark.timeout(300)
def test_the_digits_section_trains_through_the_platforms_loop_scores_subnets_and_a_rerun_only_scores(
        tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: tiny_digits\nbatch_size: 32\noptimizer: {name: adam, lr: 3.0e-3}\n"
                      "schedule: {epochs: 1, milestones: [1], warmup_steps: 0}\nmax_steps_per_epoch: 3\n"
                      "sandwich: {num_random: 1}\nbn_recalibration: {images: 64, batch_size: 32}\n"
                      "eval: {every_epochs: 0, batch_size: 128}\ntorch_threads: 2\n")
    out = tmp_path / "digits.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_ofa.py"), "--sections", "accuracy", "--digits-dir",
           str(tmp_path / "run"), "--digits-recipe", str(recipe), "--digits-subnets", "1", "--json", str(out)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    if res.returncode == 2 and "ofa is not importable" in res.stdout:
        pytest.skip(res.stdout.strip())
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    acc = json.loads(out.read_text())["accuracy"]
    assert (acc["train_images"], acc["val_images"], acc["epochs"]) == (1347, 450, 1)  # a stratified quarter held out
    assert [r["arch"] for r in acc["rows"]] == ["max", "min", "random0"]
    assert all(0.0 <= r["top1"] <= r["top5"] <= 1.0 for r in acc["rows"])
    assert acc["max_top1"] == acc["rows"][0]["top1"] and acc["goal_met"] == (acc["max_top1"] >= 0.95)
    assert "digits supernet: epoch 1/1" in res.stdout

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert again.returncode == 0, again.stdout[-3000:]
    assert "digits supernet: epoch" not in again.stdout and "read from" in again.stdout  # nothing trained again
    assert json.loads(out.read_text())["accuracy"]["rows"] == acc["rows"]  # the same net, the same scores
